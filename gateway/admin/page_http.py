"""What the operator page reads off a request and answers with around its views: where it is
mounted, the request id and client for the log, a posted form, the 303 back to a view with the
notice it then shows, and the security headers on every answer."""

from __future__ import annotations

import urllib.parse
from collections.abc import Container

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

__all__ = [
    "MAX_FORM_BYTES",
    "STATIC_PATH",
    "back",
    "base",
    "client",
    "notice",
    "read_form",
    "request_id",
    "secured",
]

STATIC_PATH = "/static"
# Admin forms are a few fields; a bigger body is not one of ours.
MAX_FORM_BYTES = 64 * 1024
# What a redirect after a POST may say (`?did=<key>&n=<count>`).
_NOTICES = {
    "replayed": "Replayed to {n} subscriber(s): the deliveries are due now.",
    "redriven": "Redrove {n} dead letter(s): they are due now.",
    "paused": "Paused {name}: its deliveries wait, no attempt is spent.",
    "resumed": "Resumed {name}.",
    "dropped": "Dropped quarantined payload {n}.",
    "reprocessed": "Reprocessed the quarantine: {n} released, {m} still invalid.",
}
# The page loads its own script and stylesheet and nothing else; no site may frame it.
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def base(request: Request) -> str:
    """Where the page is mounted, as the browser sees it (/admin)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def request_id(request: Request) -> str | None:
    """The id RequestIdMiddleware gave this request (its answer's x-request-id)."""
    value = request.scope.get("state", {}).get("request_id")
    return None if value is None else str(value)


def client(request: Request) -> str | None:
    return None if request.client is None else request.client.host


def notice(request: Request, subscribers: Container[str]) -> str | None:
    """The sentence `?did=` names, with its counts and a configured subscriber's name only."""
    template = _NOTICES.get(request.query_params.get("did", ""))
    if template is None:
        return None
    n, m, name = (request.query_params.get(key, "") for key in ("n", "m", "name"))
    return template.format(
        n=n if n.isdigit() else "?",
        m=m if m.isdigit() else "?",
        name=name if name in subscribers else "?",
    )


def back(request: Request, path: str, **said: object) -> Response:
    query = urllib.parse.urlencode({key: str(value) for key, value in said.items()})
    return RedirectResponse(f"{base(request)}{path}?{query}", status_code=303)


async def read_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form's fields (the last of a repeated name); None when it is too big or
    not a form. Read here rather than with request.form(), which needs python-multipart for
    what is one line of the standard library."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    return dict(urllib.parse.parse_qsl(text, keep_blank_values=True))


def secured(response: Response) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    return response

"""The operator page at /admin/ (CONTRACT.md 8): server-rendered views over the same operations
the admin API and the CLI call (gateway/operations/), a login exchanging the admin token for a
session cookie, and a live strip (gateway/admin/live.py) refreshed by a small static script.

Every state change is a POST carrying the session's CSRF token (gateway/admin/session.py) and
answers 303 back to the view it came from, with what happened in the query (`?did=...`, a fixed
sentence: a link cannot put words of its own on the page). The token itself is never rendered,
logged or put in the cookie.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Container, Sequence
from pathlib import Path
from typing import Any

import jinja2
import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.source import Secret
from gateway.admin.live import live_figures
from gateway.admin.session import (
    COOKIE_NAME,
    CSRF_FIELD,
    SESSION_SECONDS,
    Session,
    csrf_is_valid,
    csrf_token_for,
    new_session,
    read_session,
    token_is_valid,
)
from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.operations.dead_letters import list_dead_letters, redrive
from gateway.operations.errors import OperationError
from gateway.operations.events import EventFilters, event_detail, search_events
from gateway.operations.quarantine import drop_quarantined, list_quarantine
from gateway.operations.replay import replay_event
from gateway.operations.subscribers import list_subscribers, pause, resume
from gateway.operations.times import parse_time
from gateway.reprocess import reprocess_quarantine
from gateway.store.base import Store

__all__ = ["operator_page", "page_routes"]

log = structlog.get_logger("gateway.admin")

_HERE = Path(__file__).parent
PAGE_SIZE = 50
_STATIC_PATH = "/static"
# Admin forms are a few fields; a bigger body is not one of ours.
MAX_FORM_BYTES = 64 * 1024
_NOT_FOUND = ("unknown_subscriber", "not_found")
_FILTERS = ("source", "type", "subject", "status", "since", "until")
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

_templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)


def _pretty_json(raw: bytes) -> str:
    return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)


def _when(rfc3339: str | None) -> str:
    """`2026-11-29T20:48:50.123456Z` as `2026-11-29 20:48:50` (UTC, whole seconds)."""
    if rfc3339 is None:
        return "\N{EN DASH}"
    return rfc3339.replace("T", " ")[:19]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "\N{EN DASH}"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


_templates.env.filters["when"] = _when
_templates.env.filters["age"] = _age

View = Callable[[Request, Session], Awaitable[Response]]
Action = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]


class OperatorPage:
    """The views and actions, over one gateway's config, store and metrics."""

    def __init__(
        self, config: GatewayConfig, store: Store, metrics: Metrics, tokens: Sequence[Secret]
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._tokens = tuple(tokens)

    # The doors: who may see a view, who may act.

    def view(self, handler: View) -> Callable[[Request], Awaitable[Response]]:
        """A GET view for a logged-in operator; anyone else is sent to the login form."""

        async def guarded(request: Request) -> Response:
            session = read_session(request, self._tokens)
            if session is None:
                return _secured(RedirectResponse(f"{_base(request)}/", status_code=303))
            return _secured(await handler(request, session))

        return guarded

    def action(self, handler: Action) -> Callable[[Request], Awaitable[Response]]:
        """A POST for a logged-in operator whose form carries the session's CSRF token: 401
        without a session, 403 without the token (a form posted from another site)."""

        async def guarded(request: Request) -> Response:
            session = read_session(request, self._tokens)
            if session is None:
                return _secured(self._login_form(request, "Log in first.", status_code=401))
            form = await _read_form(request)
            if form is None or not csrf_is_valid(request, form.get(CSRF_FIELD)):
                log.warning(
                    "admin_csrf_refused", request_id=_request_id(request), path=request.url.path
                )
                return _secured(
                    self._render(
                        request,
                        session,
                        "message.html",
                        {
                            "view": "",
                            "heading": "Refused",
                            "detail": "This form is missing its CSRF token, or its token is "
                            "not this session's. Reload the page and try again.",
                        },
                        status_code=403,
                    )
                )
            try:
                return _secured(await handler(request, session, form))
            except OperationError as error:
                return _secured(
                    self._render(
                        request,
                        session,
                        "message.html",
                        {"view": "", "heading": "Not done", "detail": error.detail},
                        status_code=404 if error.code in _NOT_FOUND else 422,
                    )
                )

        return guarded

    # Login and logout.

    async def home(self, request: Request) -> Response:
        session = read_session(request, self._tokens)
        if session is None:
            return _secured(self._login_form(request, None))
        return _secured(await self.events(request, session))

    async def login(self, request: Request) -> Response:
        form = await _read_form(request)
        given = "" if form is None else form.get("token", "")
        if not token_is_valid(given, self._tokens):
            # Logged without the value: right or wrong, a token never reaches a log line.
            log.warning(
                "admin_login_refused", request_id=_request_id(request), client=_client(request)
            )
            return _secured(self._login_form(request, "That token is not right.", 401))
        session = new_session(self._tokens)
        log.info("admin_login", request_id=_request_id(request), client=_client(request))
        response = RedirectResponse(f"{_base(request)}/", status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            session.cookie_value,
            max_age=SESSION_SECONDS,
            path=_base(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return _secured(response)

    async def logout_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        response = RedirectResponse(f"{_base(request)}/", status_code=303)
        response.delete_cookie(COOKIE_NAME, path=_base(request), httponly=True, samesite="strict")
        return response

    # Views.

    async def events(self, request: Request, session: Session) -> Response:
        given = {name: request.query_params.get(name, "").strip() for name in _FILTERS}
        cursor = request.query_params.get("cursor") or None
        error = None
        try:
            filters = EventFilters(
                source=given["source"] or None,
                type=given["type"] or None,
                subject=given["subject"] or None,
                status=given["status"] or None,
                since=parse_time("since", given["since"]) if given["since"] else None,
                until=parse_time("until", given["until"]) if given["until"] else None,
            )
            page = await search_events(self._store, filters, limit=PAGE_SIZE, cursor=cursor)
            items, next_cursor = page.items, page.next_cursor
        except OperationError as refused:
            error, items, next_cursor = refused.detail, [], None
        kept = {name: value for name, value in given.items() if value}
        return self._render(
            request,
            session,
            "events.html",
            {
                "view": "events",
                "filters": given,
                "sources": sorted(self._config.sources),
                "items": items,
                "first_page": cursor is None,
                "filtered": bool(kept),
                "next_href": (
                    None
                    if next_cursor is None
                    else "?" + urllib.parse.urlencode({**kept, "cursor": next_cursor})
                ),
                "newest_href": "?" + urllib.parse.urlencode(kept),
                "error": error,
            },
            status_code=422 if error else 200,
        )

    async def event(self, request: Request, session: Session) -> Response:
        event_id = request.path_params["event_id"]
        detail = await event_detail(self._store, event_id)
        if detail is None:
            return self._render(
                request,
                session,
                "message.html",
                {"view": "events", "heading": "No such event", "detail": event_id},
                status_code=404,
            )
        event = json.loads(bytes(detail.event))
        return self._render(
            request,
            session,
            "event.html",
            {
                "view": "events",
                "event_id": event_id,
                "event": event,
                "event_json": _pretty_json(bytes(detail.event)),
                "deliveries": detail.deliveries,
                "subscribers": sorted(self._config.subscribers),
            },
        )

    async def dead_letters(self, request: Request, session: Session) -> Response:
        subscriber = request.query_params.get("subscriber") or None
        cursor = request.query_params.get("cursor") or None
        error = None
        try:
            page = await list_dead_letters(
                self._store, subscriber=subscriber, limit=PAGE_SIZE, cursor=cursor
            )
            items, next_cursor = page.items, page.next_cursor
        except OperationError as refused:
            error, items, next_cursor = refused.detail, [], None
        kept = {"subscriber": subscriber} if subscriber else {}
        return self._render(
            request,
            session,
            "dead_letters.html",
            {
                "view": "dead-letters",
                "subscriber": subscriber or "",
                "subscribers": sorted(self._config.subscribers),
                "items": items,
                "next_href": (
                    None
                    if next_cursor is None
                    else "?" + urllib.parse.urlencode({**kept, "cursor": next_cursor})
                ),
                "error": error,
            },
            status_code=422 if error else 200,
        )

    async def subscribers(self, request: Request, session: Session) -> Response:
        return self._render(
            request,
            session,
            "subscribers.html",
            {"view": "subscribers", "items": await list_subscribers(self._store, self._config)},
        )

    async def quarantine(self, request: Request, session: Session) -> Response:
        return self._render(
            request,
            session,
            "quarantine.html",
            {"view": "quarantine", "items": await list_quarantine(self._store)},
        )

    async def live(self, request: Request) -> Response:
        """The live strip's figures, as JSON (polled by admin.js)."""
        if read_session(request, self._tokens) is None:
            return _secured(JSONResponse({"error": "unauthorized"}, status_code=401))
        figures = await live_figures(self._store, self._config, self._metrics)
        return _secured(Response(_encode(figures), media_type="application/json"))

    # Actions.

    async def replay_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        event_id = request.path_params["event_id"]
        chosen = [name for name in self._config.subscribers if form.get(f"to:{name}") == "on"]
        replayed = await replay_event(self._store, self._config, event_id, chosen or None)
        if replayed is None:
            raise _NoSuchEvent(event_id)
        log.info(
            "admin_replay", request_id=_request_id(request), event_id=event_id, replayed=replayed
        )
        path = f"/events/{urllib.parse.quote(event_id)}"
        return _back(request, path, did="replayed", n=replayed)

    async def redrive_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        subscriber = form.get("subscriber") or None
        since = parse_time("since", form["since"]) if form.get("since") else None
        until = parse_time("until", form["until"]) if form.get("until") else None
        count = await redrive(
            self._store, self._config, subscriber=subscriber, since=since, until=until
        )
        log.info(
            "admin_redrive", request_id=_request_id(request), subscriber=subscriber, redriven=count
        )
        return _back(request, "/dead-letters", did="redriven", n=count)

    async def pause_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        name = request.path_params["name"]
        await pause(self._store, self._config, name)
        log.info("admin_pause", request_id=_request_id(request), subscriber=name)
        return _back(request, "/subscribers", did="paused", name=name)

    async def resume_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        name = request.path_params["name"]
        await resume(self._store, self._config, name)
        log.info("admin_resume", request_id=_request_id(request), subscriber=name)
        return _back(request, "/subscribers", did="resumed", name=name)

    async def drop_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        quarantine_id = request.path_params["quarantine_id"]
        if not await drop_quarantined(self._store, quarantine_id):
            raise _NoSuchPayload(quarantine_id)
        log.info(
            "admin_quarantine_drop", request_id=_request_id(request), quarantine_id=quarantine_id
        )
        return _back(request, "/quarantine", did="dropped", n=quarantine_id)

    async def reprocess_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        report = await reprocess_quarantine(self._config, self._store, lambda line: None)
        log.info(
            "admin_reprocess",
            request_id=_request_id(request),
            accepted=report.accepted,
            still_invalid=report.still_invalid,
        )
        released = report.accepted + report.duplicate
        return _back(request, "/quarantine", did="reprocessed", n=released, m=report.still_invalid)

    # Rendering.

    def _render(
        self,
        request: Request,
        session: Session,
        template: str,
        context: dict[str, Any],
        status_code: int = 200,
    ) -> Response:
        return _templates.TemplateResponse(
            request,
            template,
            {
                "base": _base(request),
                "csrf_token": csrf_token_for(session),
                "notice": _notice(request, self._config.subscribers),
                "error": None,
                **context,
            },
            status_code=status_code,
        )

    def _login_form(self, request: Request, error: str | None, status_code: int = 200) -> Response:
        return _templates.TemplateResponse(
            request,
            "login.html",
            {"base": _base(request), "error": error},
            status_code=status_code,
        )


class _NoSuchEvent(OperationError):
    code = "not_found"

    def __init__(self, event_id: str) -> None:
        super().__init__(f"no event {event_id}")


class _NoSuchPayload(OperationError):
    code = "not_found"

    def __init__(self, quarantine_id: int) -> None:
        super().__init__(f"no quarantined payload {quarantine_id} is waiting")


def operator_page(
    config: GatewayConfig, store: Store, metrics: Metrics, *, not_found: ASGIApp
) -> ASGIApp:
    """The page, to mount at /admin; `not_found` answers a path it does not know."""
    routes = page_routes(config, store, metrics, config.admin.tokens)
    return _LoggedPage(Router(routes, default=not_found))


class _LoggedPage:
    """One log line per page request (CONTRACT.md 8: admin requests are logged with their
    request id): method, path and status, never a query, a form, a header or a cookie. The
    stylesheet and script are left out: they say nothing about what an operator did."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Inside the /admin mount `path` is still the whole path; `root_path` is the mount's.
        inner = scope["path"][len(scope.get("root_path", "")) :]
        if scope["type"] != "http" or inner.startswith(f"{_STATIC_PATH}/"):
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, send_noting_status)
        finally:
            log.info(
                "admin_page_request",
                request_id=scope.get("state", {}).get("request_id"),
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )


def page_routes(
    config: GatewayConfig, store: Store, metrics: Metrics, tokens: Sequence[Secret]
) -> list[BaseRoute]:
    """The page's routes, relative to where they are mounted (/admin)."""
    page = OperatorPage(config, store, metrics, tokens)
    return [
        Route("/", page.home, methods=["GET"]),
        Route("/login", page.login, methods=["POST"]),
        Route("/logout", page.action(page.logout_action), methods=["POST"]),
        Route("/live", page.live, methods=["GET"]),
        Route("/events/{event_id}", page.view(page.event), methods=["GET"]),
        Route("/events/{event_id}/replay", page.action(page.replay_action), methods=["POST"]),
        Route("/dead-letters", page.view(page.dead_letters), methods=["GET"]),
        Route("/dead-letters/redrive", page.action(page.redrive_action), methods=["POST"]),
        Route("/subscribers", page.view(page.subscribers), methods=["GET"]),
        Route("/subscribers/{name}/pause", page.action(page.pause_action), methods=["POST"]),
        Route("/subscribers/{name}/resume", page.action(page.resume_action), methods=["POST"]),
        Route("/quarantine", page.view(page.quarantine), methods=["GET"]),
        Route("/quarantine/reprocess", page.action(page.reprocess_action), methods=["POST"]),
        Route(
            "/quarantine/{quarantine_id:int}/drop", page.action(page.drop_action), methods=["POST"]
        ),
        Mount(_STATIC_PATH, StaticFiles(directory=_HERE / "static")),
    ]


def _base(request: Request) -> str:
    """Where the page is mounted, as the browser sees it (/admin)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _request_id(request: Request) -> str | None:
    """The id RequestIdMiddleware gave this request (its answer's x-request-id)."""
    value = request.scope.get("state", {}).get("request_id")
    return None if value is None else str(value)


def _client(request: Request) -> str | None:
    return None if request.client is None else request.client.host


def _notice(request: Request, subscribers: Container[str]) -> str | None:
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


def _back(request: Request, path: str, **said: object) -> Response:
    query = urllib.parse.urlencode({key: str(value) for key, value in said.items()})
    return RedirectResponse(f"{_base(request)}{path}?{query}", status_code=303)


async def _read_form(request: Request) -> dict[str, str] | None:
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


def _secured(response: Response) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    return response


def _encode(value: object) -> bytes:
    return msgspec.json.encode(value)

"""The operator page's session cookie and CSRF tokens (docs/reference/admin.md).

The cookie never holds the admin token: it holds a random session id and an expiry, signed with
HMAC-SHA256 under a key derived from the configured tokens. Derived, not random per process,
because `serve --workers N` runs N processes and any of them may answer the next request; and
because it is derived from the tokens, changing the token logs every session out.

A session is `<id>.<expires>.<signature>` (base64url, unpadded; expires in unix seconds). The
CSRF token of a session is an HMAC keyed with its signature, which only the server can make and
only the browser holds (HttpOnly): the page puts it in its forms, another site cannot compute
it. A CSRF token is only worth checking on a request whose session is valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

import msgspec
from starlette.requests import Request

from adapters.source import Secret

__all__ = [
    "COOKIE_NAME",
    "COOKIE_PATH",
    "CSRF_FIELD",
    "SESSION_SECONDS",
    "Session",
    "csrf_is_valid",
    "csrf_token_for",
    "new_session",
    "read_session",
    "session_is_valid",
    "token_is_valid",
]

COOKIE_NAME = "finrelay_session"
COOKIE_PATH = "/admin"
CSRF_FIELD = "csrf_token"
# An operator's working day; the page logs in again after that.
SESSION_SECONDS = 12 * 3600
# Separates this key from any other use of the same tokens (key separation, as HKDF's "info").
_KEY_LABEL = b"finrelay admin session key v1"
_SIGN_LABEL = b"session"
_CSRF_LABEL = b"csrf"


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """A signed session, as read from (or written to) the cookie."""

    id: str
    expires: int
    signature: str

    @property
    def cookie_value(self) -> str:
        return f"{self.id}.{self.expires}.{self.signature}"


def token_is_valid(given: str, tokens: Sequence[Secret]) -> bool:
    """True when `given` is one of the admin tokens; compared in constant time against each
    (no early exit, so the time does not say which one nearly matched)."""
    given_bytes = given.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given_bytes, token.reveal().encode())
    return matched and bool(given_bytes)


def new_session(tokens: Sequence[Secret], now: float | None = None) -> Session:
    """A fresh session for an operator who just gave a right token."""
    now = time.time() if now is None else now
    session_id = _b64(secrets.token_bytes(18))
    expires = int(now) + SESSION_SECONDS
    signature = _b64(_sign(_session_key(tokens), session_id, expires))
    return Session(id=session_id, expires=expires, signature=signature)


def read_session(
    request: Request, tokens: Sequence[Secret], now: float | None = None
) -> Session | None:
    """The request's session when its cookie is well formed, signed under today's tokens and
    not expired; else None."""
    if not tokens:
        return None
    session = _parse(request.cookies.get(COOKIE_NAME))
    if session is None:
        return None
    expected = _b64(_sign(_session_key(tokens), session.id, session.expires))
    if not hmac.compare_digest(session.signature.encode(), expected.encode()):
        return None
    if session.expires <= (time.time() if now is None else now):
        return None
    return session


def session_is_valid(request: Request, tokens: Sequence[Secret]) -> bool:
    """True when the request carries a live session cookie (the admin API's other way in)."""
    return read_session(request, tokens) is not None


def csrf_token_for(session: Session) -> str:
    """The token the page's forms carry for this session."""
    return _b64(hmac.new(session.signature.encode(), _CSRF_LABEL, hashlib.sha256).digest())


def csrf_is_valid(request: Request, form_token: str | None) -> bool:
    """True when `form_token` is the CSRF token of the request's session cookie. Check the
    session itself (session_is_valid) as well: this says only that the two belong together."""
    session = _parse(request.cookies.get(COOKIE_NAME))
    if session is None or not form_token:
        return False
    return hmac.compare_digest(form_token.encode(), csrf_token_for(session).encode())


def _parse(value: str | None) -> Session | None:
    if value is None:
        return None
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12 or not parts[0]:
        return None
    return Session(id=parts[0], expires=int(parts[1]), signature=parts[2])


def _session_key(tokens: Sequence[Secret]) -> bytes:
    material = b"\0".join(sorted(token.reveal().encode() for token in tokens))
    return hmac.new(_KEY_LABEL, material, hashlib.sha256).digest()


def _sign(key: bytes, session_id: str, expires: int) -> bytes:
    message = b"\0".join((_SIGN_LABEL, session_id.encode(), str(expires).encode()))
    return hmac.new(key, message, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

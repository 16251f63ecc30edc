"""`x-request-id` on every response (docs/reference/ingress.md): the caller's when it is sane, else
a new one.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task per request.
"""

from __future__ import annotations

import itertools
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIdMiddleware", "request_id_of", "sane_request_id"]

_SANE = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# A random prefix per process and a counter: unique across processes and restarts, without a
# uuid4's system call for randomness on every request (15% of the event loop under load).
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


def sane_request_id(value: bytes | None) -> str:
    """The caller's id when it is at most 128 of `A-Za-z0-9._-` (safe to log and echo)."""
    if value is not None and _SANE.fullmatch(value):
        return value.decode("ascii")
    return f"{_PREFIX}{next(_COUNTER):010x}"


def request_id_of(scope: Scope) -> str:
    """The request's id: its own `x-request-id` when sane, else a new one."""
    given = next((value for key, value in scope["headers"] if key == b"x-request-id"), None)
    return sane_request_id(given)


class RequestIdMiddleware:
    """For everything but the webhooks, which answer with the id themselves
    (gateway/ingress/answers.py): a wrapper around `send` is two more coroutine calls per
    message on the hot path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        header = (b"x-request-id", request_id.encode("ascii"))
        # The admin API logs each request with the id its answer carries (gateway/admin/api.py).
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)

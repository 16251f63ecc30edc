"""One log line per operator page request (docs/reference/admin.md)."""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.admin.page_http import STATIC_PATH

__all__ = ["LoggedPage"]

log = structlog.get_logger("gateway.admin")


class LoggedPage:
    """One log line per page request (docs/reference/admin.md: admin requests are logged with their
    request id): method, path and status, never a query, a form, a header or a cookie. The
    stylesheet and script are left out: they say nothing about what an operator did."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Inside the /admin mount `path` is still the whole path; `root_path` is the mount's.
        inner = scope["path"][len(scope.get("root_path", "")) :]
        if scope["type"] != "http" or inner.startswith(f"{STATIC_PATH}/"):
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

"""The operator page at /admin/ (docs/reference/admin.md): server-rendered views over the same
operations the admin API and the CLI call (gateway/operations/), a login exchanging the admin token
for a session cookie, and a live strip (gateway/admin/live.py) refreshed by a small static script.

Every state change is a POST carrying the session's CSRF token (gateway/admin/session.py) and
answers 303 back to the view it came from, with what happened in the query (`?did=...`, a fixed
sentence: a link cannot put words of its own on the page). The token itself is never rendered,
logged or put in the cookie.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from adapters.source import Secret
from gateway.admin.live import live_figures
from gateway.admin.page_http import (
    STATIC_PATH,
    back,
    base,
    client,
    notice,
    read_form,
    request_id,
    secured,
)
from gateway.admin.page_log import LoggedPage
from gateway.admin.page_templates import pretty_json, templates
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
from gateway.tracing import Tracing

__all__ = ["operator_page", "page_routes"]

log = structlog.get_logger("gateway.admin")

_HERE = Path(__file__).parent
PAGE_SIZE = 50
_NOT_FOUND = ("unknown_subscriber", "not_found")
_FILTERS = ("source", "type", "subject", "status", "since", "until")

View = Callable[[Request, Session], Awaitable[Response]]
Action = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]


class OperatorPage:
    """The views and actions, over one gateway's config, store and metrics."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        metrics: Metrics,
        tokens: Sequence[Secret],
        tracing: Tracing | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        self._tokens = tuple(tokens)
        # A replay or redrive starts a new trace (docs/reference/traces.md), as from the API and the
        # CLI.
        self._tracing = tracing

    # The doors: who may see a view, who may act.

    def view(self, handler: View) -> Callable[[Request], Awaitable[Response]]:
        """A GET view for a logged-in operator; anyone else is sent to the login form."""

        async def guarded(request: Request) -> Response:
            session = read_session(request, self._tokens)
            if session is None:
                return secured(RedirectResponse(f"{base(request)}/", status_code=303))
            return secured(await handler(request, session))

        return guarded

    def action(self, handler: Action) -> Callable[[Request], Awaitable[Response]]:
        """A POST for a logged-in operator whose form carries the session's CSRF token: 401
        without a session, 403 without the token (a form posted from another site)."""

        async def guarded(request: Request) -> Response:
            session = read_session(request, self._tokens)
            if session is None:
                return secured(self._login_form(request, "Log in first.", status_code=401))
            form = await read_form(request)
            if form is None or not csrf_is_valid(request, form.get(CSRF_FIELD)):
                log.warning(
                    "admin_csrf_refused", request_id=request_id(request), path=request.url.path
                )
                return secured(
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
                return secured(await handler(request, session, form))
            except OperationError as error:
                return secured(
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
            return secured(self._login_form(request, None))
        return secured(await self.events(request, session))

    async def login(self, request: Request) -> Response:
        form = await read_form(request)
        given = "" if form is None else form.get("token", "")
        if not token_is_valid(given, self._tokens):
            # Logged without the value: right or wrong, a token never reaches a log line.
            log.warning(
                "admin_login_refused", request_id=request_id(request), client=client(request)
            )
            return secured(self._login_form(request, "That token is not right.", 401))
        session = new_session(self._tokens)
        log.info("admin_login", request_id=request_id(request), client=client(request))
        response = RedirectResponse(f"{base(request)}/", status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            session.cookie_value,
            max_age=SESSION_SECONDS,
            path=base(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return secured(response)

    async def logout_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        response = RedirectResponse(f"{base(request)}/", status_code=303)
        response.delete_cookie(COOKIE_NAME, path=base(request), httponly=True, samesite="strict")
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
                "event_json": pretty_json(bytes(detail.event)),
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
            return secured(JSONResponse({"error": "unauthorized"}, status_code=401))
        figures = await live_figures(self._store, self._config, self._metrics)
        return secured(Response(_encode(figures), media_type="application/json"))

    # Actions.

    async def replay_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        event_id = request.path_params["event_id"]
        chosen = [name for name in self._config.subscribers if form.get(f"to:{name}") == "on"]
        replayed = await replay_event(
            self._store, self._config, event_id, chosen or None, tracing=self._tracing
        )
        if replayed is None:
            raise _NoSuchEvent(event_id)
        log.info(
            "admin_replay", request_id=request_id(request), event_id=event_id, replayed=replayed
        )
        path = f"/events/{urllib.parse.quote(event_id)}"
        return back(request, path, did="replayed", n=replayed)

    async def redrive_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        subscriber = form.get("subscriber") or None
        since = parse_time("since", form["since"]) if form.get("since") else None
        until = parse_time("until", form["until"]) if form.get("until") else None
        count = await redrive(
            self._store,
            self._config,
            subscriber=subscriber,
            since=since,
            until=until,
            tracing=self._tracing,
        )
        log.info(
            "admin_redrive", request_id=request_id(request), subscriber=subscriber, redriven=count
        )
        return back(request, "/dead-letters", did="redriven", n=count)

    async def pause_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        name = request.path_params["name"]
        await pause(self._store, self._config, name)
        log.info("admin_pause", request_id=request_id(request), subscriber=name)
        return back(request, "/subscribers", did="paused", name=name)

    async def resume_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        name = request.path_params["name"]
        await resume(self._store, self._config, name)
        log.info("admin_resume", request_id=request_id(request), subscriber=name)
        return back(request, "/subscribers", did="resumed", name=name)

    async def drop_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        quarantine_id = request.path_params["quarantine_id"]
        if not await drop_quarantined(self._store, quarantine_id):
            raise _NoSuchPayload(quarantine_id)
        log.info(
            "admin_quarantine_drop", request_id=request_id(request), quarantine_id=quarantine_id
        )
        return back(request, "/quarantine", did="dropped", n=quarantine_id)

    async def reprocess_action(
        self, request: Request, session: Session, form: dict[str, str]
    ) -> Response:
        report = await reprocess_quarantine(self._config, self._store, lambda line: None)
        log.info(
            "admin_reprocess",
            request_id=request_id(request),
            accepted=report.accepted,
            still_invalid=report.still_invalid,
        )
        released = report.accepted + report.duplicate
        return back(request, "/quarantine", did="reprocessed", n=released, m=report.still_invalid)

    # Rendering.

    def _render(
        self,
        request: Request,
        session: Session,
        template: str,
        context: dict[str, Any],
        status_code: int = 200,
    ) -> Response:
        return templates.TemplateResponse(
            request,
            template,
            {
                "base": base(request),
                "csrf_token": csrf_token_for(session),
                "notice": notice(request, self._config.subscribers),
                "error": None,
                **context,
            },
            status_code=status_code,
        )

    def _login_form(self, request: Request, error: str | None, status_code: int = 200) -> Response:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"base": base(request), "error": error},
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
    config: GatewayConfig,
    store: Store,
    metrics: Metrics,
    *,
    not_found: ASGIApp,
    tracing: Tracing | None = None,
) -> ASGIApp:
    """The page, to mount at /admin; `not_found` answers a path it does not know."""
    routes = page_routes(config, store, metrics, config.admin.tokens, tracing)
    return LoggedPage(Router(routes, default=not_found))


def page_routes(
    config: GatewayConfig,
    store: Store,
    metrics: Metrics,
    tokens: Sequence[Secret],
    tracing: Tracing | None = None,
) -> list[BaseRoute]:
    """The page's routes, relative to where they are mounted (/admin)."""
    page = OperatorPage(config, store, metrics, tokens, tracing)
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
        Mount(STATIC_PATH, StaticFiles(directory=_HERE / "static")),
    ]


def _encode(value: object) -> bytes:
    return msgspec.json.encode(value)

"""The admin API under /admin/api (docs/reference/admin.md): JSON over the operations layer.

Each handler reads its parameters, calls one function of gateway/operations/ and encodes the
Struct it returns as it is; openapi.json is generated from those same Structs, so the document
cannot drift from the answers. Errors are the operations' values (UnknownSubscriber,
InvalidRequest) mapped to statuses here, and nowhere else.

Every request needs `Authorization: Bearer <token>` or the operator page's session cookie (a
cookie-borne write must also carry the page's CSRF token in `X-CSRF-Token`); anything else is
401. One log line per request, with its request id; never the Authorization value or a cookie.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Message, Receive, Scope, Send

from gateway.admin.session import csrf_is_valid, session_is_valid, token_is_valid
from gateway.config import GatewayConfig
from gateway.operations.dead_letters import DeadLetterPage, list_dead_letters, redrive
from gateway.operations.errors import InvalidRequest, OperationError, UnknownSubscriber
from gateway.operations.events import EventDetail, EventFilters, EventPage, event_detail
from gateway.operations.events import search_events as search
from gateway.operations.paging import DEFAULT_LIMIT, MAX_LIMIT
from gateway.operations.quarantine import (
    QuarantinePage,
    ReprocessResult,
    drop_quarantined,
    quarantine_page,
    reprocess,
)
from gateway.operations.replay import NotReplayed, replay
from gateway.operations.subscribers import (
    SubscriberState,
    SubscriberStatus,
    list_subscribers,
    pause,
    resume,
)
from gateway.operations.times import parse_time
from gateway.store.base import Store, StoreUnavailable
from gateway.tracing import Tracing

__all__ = ["AdminApi", "openapi_document"]

log = structlog.get_logger("gateway.admin")

CSRF_HEADER = "x-csrf-token"
# A request body larger than this is no operator's request.
MAX_BODY_BYTES = 65_536


# Answers and request bodies the operations do not already define.


class ErrorAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    error: str
    detail: str | None = None


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The subscribers to send to; absent: those the event has deliveries for.
    subscribers: list[str] | None = None


class ReplayAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    replayed: int
    # The event's subscribers this gateway's config does not define, left alone; absent when
    # there are none. (A gateway, or a `gateway replay --config`, whose config names them can
    # replay to them.)
    not_replayed: tuple[NotReplayed, ...] = ()


class RedriveRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    subscriber: str | None = None
    # When they died: ISO 8601 or unix seconds.
    since: str | float | None = None
    until: str | float | None = None


class RedriveAnswer(msgspec.Struct, frozen=True, kw_only=True):
    redriven: int


class StateAnswer(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    state: SubscriberState


def _json(value: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


def _error(status: int, error: str, detail: str | None = None) -> Response:
    return _json(ErrorAnswer(error=error, detail=detail), status)


NOT_FOUND = ErrorAnswer(error="not_found")


def not_found_answer() -> Response:
    """The answer to anything under /admin that does not exist (or with the admin API off)."""
    return _json(NOT_FOUND, 404)


# Parameters.


def _query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return None if value == "" else value


def _limit(request: Request) -> int:
    text = _query(request, "limit")
    if text is None:
        return DEFAULT_LIMIT
    try:
        return int(text)
    except ValueError:
        raise InvalidRequest(f"limit: {text!r} is not a whole number") from None


def _time(request: Request, name: str) -> float | None:
    text = _query(request, name)
    return None if text is None else parse_time(name, text)


def _body_time(name: str, value: str | float | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    return parse_time(name, value)


async def _body(request: Request, kind: type[Any]) -> Any:
    """The request's JSON body as `kind`; an absent body is `kind()` (every field optional)."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidRequest(f"body: more than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return kind()
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as error:
        raise InvalidRequest(f"body: {error}") from None
    except msgspec.DecodeError:
        raise InvalidRequest("body: not JSON") from None


# Handlers: parameters in, one operation, its Struct out.

Handler = Callable[[Request], Awaitable[Response]]


class AdminApi:
    """The ASGI app mounted at /admin/api: authentication, then the routes."""

    def __init__(
        self, config: GatewayConfig, store: Store, *, tracing: Tracing | None = None
    ) -> None:
        self._config = config
        self._store = store
        # A replay or redrive starts a new trace (docs/reference/traces.md); none without it.
        self._tracing = tracing
        self._tokens = config.admin.tokens
        self._openapi = msgspec.json.encode(openapi_document())
        self._router = Router(
            routes=[
                Route("/events", self._events, methods=["GET"]),
                Route("/events/{event_id}", self._event, methods=["GET"]),
                Route("/events/{event_id}/replay", self._replay, methods=["POST"]),
                Route("/dead-letters", self._dead_letters, methods=["GET"]),
                Route("/dead-letters/redrive", self._redrive, methods=["POST"]),
                Route("/subscribers", self._subscribers, methods=["GET"]),
                Route("/subscribers/{name}/pause", self._pause, methods=["POST"]),
                Route("/subscribers/{name}/resume", self._resume, methods=["POST"]),
                Route("/quarantine", self._quarantine, methods=["GET"]),
                Route("/quarantine/reprocess", self._reprocess, methods=["POST"]),
                Route("/quarantine/{quarantine_id}", self._drop, methods=["DELETE"]),
                Route("/openapi.json", self._openapi_json, methods=["GET"]),
            ],
            default=self._not_found,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._router(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        via = self._authenticate(request)
        status = 0

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        if via is None:
            await _error(401, "unauthorized")(scope, receive, send_noting_status)
        else:
            try:
                await self._router(scope, receive, send_noting_status)
            except StoreUnavailable as error:
                if status:  # answered already: nothing else can be said
                    raise
                detail = f"the store is unavailable: {error}"
                await _error(503, "unavailable", detail)(scope, receive, send_noting_status)
        # Which way in, never with what: no header value, no cookie.
        emit = log.warning if via is None else log.info
        emit(
            "admin_request",
            request_id=scope.get("state", {}).get("request_id"),
            method=scope["method"],
            path=scope["path"],
            status=status,
            auth=via or "none",
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _authenticate(self, request: Request) -> Literal["bearer", "session"] | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token_is_valid(token.strip(), self._tokens):
            return "bearer"
        # A cookie rides along on any request the browser makes, a forged one included: a
        # write must also prove it comes from the page.
        reads = request.method in ("GET", "HEAD")
        if session_is_valid(request, self._tokens) and (
            reads or csrf_is_valid(request, request.headers.get(CSRF_HEADER))
        ):
            return "session"
        return None

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await not_found_answer()(scope, receive, send)

    @staticmethod
    def _answer(handler: Callable[[], Awaitable[Response]]) -> Awaitable[Response]:
        async def run() -> Response:
            try:
                return await handler()
            except UnknownSubscriber as error:
                return _error(404, error.code, error.detail)
            except OperationError as error:
                return _error(422, error.code, error.detail)

        return run()

    async def _events(self, request: Request) -> Response:
        async def handle() -> Response:
            filters = EventFilters(
                source=_query(request, "source"),
                type=_query(request, "type"),
                subject=_query(request, "subject"),
                status=_query(request, "status"),
                since=_time(request, "since"),
                until=_time(request, "until"),
            )
            page = await search(
                self._store, filters, limit=_limit(request), cursor=_query(request, "cursor")
            )
            return _json(page)

        return await self._answer(handle)

    async def _event(self, request: Request) -> Response:
        detail = await event_detail(self._store, request.path_params["event_id"])
        return not_found_answer() if detail is None else _json(detail)

    async def _replay(self, request: Request) -> Response:
        async def handle() -> Response:
            body: ReplayRequest = await _body(request, ReplayRequest)
            done = await replay(
                self._store,
                self._config,
                request.path_params["event_id"],
                body.subscribers,
                tracing=self._tracing,
            )
            if done is None:
                return not_found_answer()
            answer = ReplayAnswer(replayed=len(done.replayed), not_replayed=done.not_replayed)
            return _json(answer, 202)

        return await self._answer(handle)

    async def _dead_letters(self, request: Request) -> Response:
        async def handle() -> Response:
            page = await list_dead_letters(
                self._store,
                subscriber=_query(request, "subscriber"),
                limit=_limit(request),
                cursor=_query(request, "cursor"),
            )
            return _json(page)

        return await self._answer(handle)

    async def _redrive(self, request: Request) -> Response:
        async def handle() -> Response:
            body: RedriveRequest = await _body(request, RedriveRequest)
            count = await redrive(
                self._store,
                self._config,
                subscriber=body.subscriber,
                since=_body_time("since", body.since),
                until=_body_time("until", body.until),
                tracing=self._tracing,
            )
            return _json(RedriveAnswer(redriven=count))

        return await self._answer(handle)

    async def _subscribers(self, request: Request) -> Response:
        return _json(await list_subscribers(self._store, self._config))

    async def _pause(self, request: Request) -> Response:
        async def handle() -> Response:
            status = await pause(self._store, self._config, request.path_params["name"])
            return _json(StateAnswer(name=status.name, state=status.state))

        return await self._answer(handle)

    async def _resume(self, request: Request) -> Response:
        async def handle() -> Response:
            status = await resume(self._store, self._config, request.path_params["name"])
            return _json(StateAnswer(name=status.name, state=status.state))

        return await self._answer(handle)

    async def _quarantine(self, request: Request) -> Response:
        async def handle() -> Response:
            page = await quarantine_page(
                self._store, limit=_limit(request), cursor=_query(request, "cursor")
            )
            return _json(page)

        return await self._answer(handle)

    async def _reprocess(self, request: Request) -> Response:
        return _json(await reprocess(self._store, self._config))

    async def _drop(self, request: Request) -> Response:
        text = request.path_params["quarantine_id"]
        if not text.isdigit() or len(text) > 18:
            return _error(422, "invalid_request", f"id: {text!r} is not a quarantine id")
        if not await drop_quarantined(self._store, int(text)):
            return not_found_answer()
        return Response(status_code=204)

    async def _openapi_json(self, request: Request) -> Response:
        return Response(self._openapi, media_type="application/json")


# openapi.json: the paths are declared here; every schema in it is generated from the Structs
# above and those of gateway/operations/.

_ERRORS = {
    401: "no Bearer token or session cookie (or a wrong one)",
    404: "no such event, payload or subscriber",
    422: "a bad parameter: which and why in `detail`",
    503: "the store cannot answer now",
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the admin API."""
    types: list[Any] = [
        EventPage,
        EventDetail,
        ReplayRequest,
        ReplayAnswer,
        DeadLetterPage,
        RedriveRequest,
        RedriveAnswer,
        list[SubscriberStatus],
        StateAnswer,
        QuarantinePage,
        ReprocessResult,
        ErrorAnswer,
    ]
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip((repr(t) for t in types), schemas, strict=True))

    def schema_of(kind: Any) -> dict[str, Any]:
        return dict(by_type[repr(kind)])

    def answer(description: str, kind: Any | None = None) -> dict[str, Any]:
        if kind is None:
            return {"description": description}
        return {
            "description": description,
            "content": {"application/json": {"schema": schema_of(kind)}},
        }

    def operation(
        summary: str,
        ok: tuple[int, str, Any | None],
        *,
        errors: tuple[int, ...] = (401,),
        parameters: list[dict[str, Any]] | None = None,
        body: Any | None = None,
    ) -> dict[str, Any]:
        status, description, kind = ok
        spec: dict[str, Any] = {
            "summary": summary,
            "responses": {
                str(status): answer(description, kind),
                **{str(code): answer(_ERRORS[code], ErrorAnswer) for code in (*errors, 503)},
            },
        }
        if parameters:
            spec["parameters"] = parameters
        if body is not None:
            spec["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": schema_of(body)}},
            }
        return spec

    def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description,
                "schema": schema}  # fmt: skip

    def path(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}

    text = {"type": "string"}
    time_text = {"type": "string", "description": "ISO 8601 or unix seconds"}
    paging = [
        query("limit", "items per page", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
        query("cursor", "a next_cursor from the page before", text),
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "finrelay admin API", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/admin/api/events": {
                "get": operation(
                    "Events, newest first",
                    (200, "a page of events", EventPage),
                    errors=(401, 422),
                    parameters=[
                        query("source", "the source name", text),
                        query("type", "a glob over the canonical type", text),
                        query("subject", "the event's subject", text),
                        query("status", "the event's data.status", text),
                        query("since", "received at or after", time_text),
                        query("until", "received before", time_text),
                        *paging,
                    ],
                )
            },
            "/admin/api/events/{event_id}": {
                "get": operation(
                    "One event, its deliveries and their attempts",
                    (200, "the event", EventDetail),
                    errors=(401, 404),
                    parameters=[path("event_id")],
                )
            },
            "/admin/api/events/{event_id}/replay": {
                "post": operation(
                    "Send a stored event again",
                    (
                        202,
                        "how many deliveries were queued, and which of the event's subscribers"
                        " were not (not in this gateway's config)",
                        ReplayAnswer,
                    ),
                    errors=(401, 404, 422),
                    parameters=[path("event_id")],
                    body=ReplayRequest,
                )
            },
            "/admin/api/dead-letters": {
                "get": operation(
                    "Dead letters, newest first",
                    (200, "a page of dead letters", DeadLetterPage),
                    errors=(401, 422),
                    parameters=[query("subscriber", "one subscriber's", text), *paging],
                )
            },
            "/admin/api/dead-letters/redrive": {
                "post": operation(
                    "Make dead letters pending again",
                    (200, "how many", RedriveAnswer),
                    errors=(401, 404, 422),
                    body=RedriveRequest,
                )
            },
            "/admin/api/subscribers": {
                "get": operation(
                    "Every subscriber: state, backlog, dead letters",
                    (200, "the subscribers", list[SubscriberStatus]),
                )
            },
            "/admin/api/subscribers/{name}/pause": {
                "post": operation(
                    "Hold a subscriber's deliveries pending",
                    (200, "its state", StateAnswer),
                    errors=(401, 404),
                    parameters=[path("name")],
                )
            },
            "/admin/api/subscribers/{name}/resume": {
                "post": operation(
                    "Lift a pause; re-enable a disabled subscriber",
                    (200, "its state", StateAnswer),
                    errors=(401, 404),
                    parameters=[path("name")],
                )
            },
            "/admin/api/quarantine": {
                "get": operation(
                    "Payloads waiting in quarantine, newest first",
                    (200, "a page of payloads", QuarantinePage),
                    errors=(401, 422),
                    parameters=paging,
                )
            },
            "/admin/api/quarantine/reprocess": {
                "post": operation(
                    "Quarantined payloads through their adapters again",
                    (200, "how many became events, how many still do not read", ReprocessResult),
                )
            },
            "/admin/api/quarantine/{quarantine_id}": {
                "delete": operation(
                    "Drop a payload from quarantine",
                    (204, "dropped", None),
                    errors=(401, 404, 422),
                    parameters=[path("quarantine_id")],
                )
            },
            "/admin/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}},
                        "401": answer(_ERRORS[401], ErrorAnswer),
                    },
                }
            },
        },
    }

"""The webhook handler: the checks in the contract's order (gateway/ingress/__init__.py), then
the event stored and the answer written.

This is the one hot path, so it is a plain ASGI handler rather than a Starlette endpoint: no
router trying every route, no Request or Response objects, the query string parsed only for
sources with a token, and each source's metric series resolved once. The rest of the app
(health, readiness, metrics) is ordinary Starlette (gateway/app.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import msgspec
import structlog
from prometheus_client import Counter, Histogram
from starlette.types import Receive, Scope, Send

from adapters.base import Adapter
from adapters.errors import AuthenticationError, InvalidPayload
from adapters.request import InboundRequest
from adapters.source import SourceSettings
from gateway.config import GatewayConfig
from gateway.ingress.answers import Answer, Responder
from gateway.ingress.body import read_body
from gateway.ingress.clients import client_address
from gateway.ingress.quarantine import quarantinable_headers
from gateway.metrics import Metrics
from gateway.request_id import request_id_of
from gateway.routing import Router
from gateway.store.base import AcceptOutcome, NewEvent, Store, StoreUnavailable
from gateway.tracing import Span, SpanKind, TraceContext, Tracing
from schemas.event import CanonicalEvent, encode_event

__all__ = ["WEBHOOK_PREFIX", "Ingress"]

log = structlog.get_logger("gateway.ingress")

WEBHOOK_PREFIX = "/webhooks/"

_STATUS_BY_CODE = {
    "forbidden_address": 403,
    "invalid_signature": 401,
    "invalid_token": 401,
}
# A refusal whose code has no status above (an adapter's new error nobody mapped yet) is still
# a refusal: 401 with this code, never a 500.
_UNMAPPED_REFUSAL = "unauthenticated"
# The request's span (docs/reference/traces.md), named and described as OpenTelemetry's semantic
# conventions for HTTP servers ask: `{method} {route}`, and a method HTTP does not define is
# `_OTHER` (any other word a client sends would be a new span name).
_ROUTE = "/webhooks/{source}"
_METHODS = ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
_SPAN_NAMES = {method: f"{method} {_ROUTE}" for method in _METHODS}


class _SourceSeries:
    """One source's metric series, resolved once: `labels()` costs more than the increment."""

    __slots__ = ("answered", "latency", "outcomes", "quarantined", "received", "stored", "unrouted")

    def __init__(self, metrics: Metrics, source: str) -> None:
        self.received: Counter = metrics.received.labels(source=source)
        self.stored: Counter = metrics.stored.labels(source=source)
        self.unrouted: Counter = metrics.unrouted.labels(source=source)
        self.quarantined: Counter = metrics.quarantined.labels(source=source)
        self.latency: Histogram = metrics.ingress_latency.labels(source=source)
        self.answered = metrics.answered
        self.outcomes: dict[str, Counter] = {}

    def answer(self, source: str, outcome: str) -> Counter:
        counter = self.outcomes.get(outcome)
        if counter is None:
            counter = self.outcomes[outcome] = self.answered.labels(source=source, outcome=outcome)
        return counter


class Ingress:
    """The webhook endpoint, bound to one config, store and router."""

    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        router: Router,
        metrics: Metrics,
        on_stored: Callable[[], None],
        *,
        tracing: Tracing,
    ) -> None:
        self._config = config
        self._tracing = tracing
        self._store = store
        self._router = router
        self._metrics = metrics
        self._on_stored = on_stored
        self._max_body = config.server.max_body_bytes
        self._proxies = config.server.trusted_proxies
        self._series = {name: _SourceSeries(metrics, name) for name in config.sources}
        # Each source's adapter, looked up once (the config validated every name).
        self._adapters = {
            name: config.adapters[settings.adapter] for name, settings in config.sources.items()
        }
        self._unknown = metrics.answered.labels(source="", outcome="unknown_source")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = request_id_of(scope)
        responder = Responder(send, request_id)
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        # Everything below, the request's log line included, happens inside its span.
        with self._request_span(scope, headers) as span:
            try:
                await self._handle(scope, receive, responder, started, headers, span)
            except Exception as error:
                # What Starlette's error middleware would do: log it, answer 500 if still
                # possible.
                log.exception("ingress_error", request_id=request_id)
                span.fail(type(error).__qualname__)
                if not responder.started:
                    span.set({"http.response.status_code": 500, "finrelay.outcome": "internal"})
                    await responder.json(500, {"error": "internal"})

    def _request_span(self, scope: Scope, headers: Mapping[str, str]) -> Span:
        """The webhook request's server span, continuing the caller's trace when its headers
        carry a valid `traceparent` (docs/reference/traces.md)."""
        method = scope["method"]
        name = _SPAN_NAMES.get(method, "HTTP")
        attributes = None
        if self._tracing.exporting:
            # Known when the span starts, so that a sampler can use them (as the conventions
            # ask); the rest comes with the answer (`_describe`).
            attributes = {
                "http.request.method": method if name != "HTTP" else "_OTHER",
                "http.route": _ROUTE,
                "url.scheme": scope.get("scheme", "http"),
            }
        return self._tracing.span(
            name, SpanKind.SERVER, parent=_trace_carrier(scope, headers), attributes=attributes
        )

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        responder: Responder,
        started: float,
        headers: dict[str, str],
        span: Span,
    ) -> None:
        request_id = responder.request_id
        name = scope["path"][len(WEBHOOK_PREFIX) :]
        client = self._client_of(scope)
        settings = self._config.sources.get(name)
        if settings is None:
            # The name came from the URL: not a metric label, and cut short in the answer, the
            # log and the span alike.
            self._unknown.inc()
            _describe(span, name[:64], None, client, 404, "unknown_source")
            log.info(
                "webhook",
                request_id=request_id,
                source=name[:64],
                client=client,
                outcome="unknown_source",
                status=404,
            )
            detail = f"no source {name[:64]!r}"
            await responder.json(404, {"error": "unknown_source", "detail": detail})
            return
        if scope["method"] != "POST":
            _describe(span, name, settings.adapter, client, 405, "method_not_allowed")
            await responder.json(405, {"error": "method_not_allowed"}, (b"allow", b"POST"))
            return

        series = self._series[name]
        series.received.inc()
        answer = await self._receive(scope, receive, name, settings, series, client, headers, span)
        await responder.json(answer.status, answer.content, *answer.headers, then=answer.then)
        elapsed = time.perf_counter() - started
        outcome = str(answer.fields["outcome"])
        series.answer(name, outcome).inc()
        series.latency.observe(elapsed)
        _describe(span, name, settings.adapter, client, answer.status, outcome, answer.fields)
        # Refused credentials or addresses are worth an operator's eye: a misconfigured
        # provider, a rotated secret, or someone probing.
        emit = log.warning if answer.status in (401, 403) else log.info
        emit(
            "webhook",
            request_id=request_id,
            source=name,
            client=client,
            status=answer.status,
            latency_ms=round(elapsed * 1000, 3),
            **answer.fields,
        )

    def _client_of(self, scope: Scope) -> str | None:
        """The client's address, as `client_address` judges it: for `allow_ips` and the log
        line alike."""
        peer = scope.get("client")
        if peer is None or not self._proxies:
            return peer[0] if peer else None
        forwarded = None
        for key, value in scope["headers"]:
            if key == b"x-forwarded-for":
                forwarded = value.decode("latin-1")  # the last one, as the headers dict keeps
        return client_address(peer[0], forwarded, self._proxies)

    async def _receive(
        self,
        scope: Scope,
        receive: Receive,
        name: str,
        settings: SourceSettings,
        series: _SourceSeries,
        client: str | None,
        headers: dict[str, str],
        span: Span,
    ) -> Answer:
        adapter = self._adapters[name]
        body = await read_body(headers, receive, self._max_body)
        if isinstance(body, Answer):
            return body

        inbound = InboundRequest(
            body=body,
            headers=headers,
            # Only a token reads the query string: parse it only for sources that have one.
            query=dict(parse_qsl(scope["query_string"].decode("latin-1")))
            if settings.tokens
            else {},
            client=client,
        )
        received_at = datetime.now(UTC)
        try:
            verification = adapter.verify(inbound, settings, received_at)
        except AuthenticationError as error:
            status = _STATUS_BY_CODE.get(error.code)
            if status is None:
                # The adapter's detail may say more than a refusal should: not in the answer.
                return Answer(
                    401,
                    {"error": _UNMAPPED_REFUSAL},
                    outcome=_UNMAPPED_REFUSAL,
                    code=error.code,
                    detail=error.detail,
                )
            content = {"error": error.code}
            if error.code == "invalid_signature":
                content["detail"] = error.detail
            return Answer(status, content, outcome=error.code, detail=error.detail)
        # The steps inside the request are its span's events, not spans of their own: an event
        # is a name and a time on the span already being sent, where each child span would be
        # one more object to build, queue and export (three per webhook) for the same story.
        span.event("verified")

        try:
            # A batch provider's body carries several events (docs/reference/providers.md `each`).
            normalized = (
                adapter.normalize_all(body, headers, settings, received_at, verification)
                if adapter.batch
                else adapter.normalize(body, headers, settings, received_at, verification)
            )
        except InvalidPayload as error:
            return await self._quarantine(
                settings, adapter, body, headers, verification, error, received_at, series
            )
        span.event("normalized")
        if isinstance(normalized, CanonicalEvent):
            return await self._store_event(name, normalized, received_at, series, span)
        return await self._store_events(name, normalized, received_at, series, span)

    def _new_event(
        self,
        name: str,
        event: CanonicalEvent,
        received_at: datetime,
        trace: TraceContext | None,
    ) -> NewEvent:
        if trace is not None:
            # The CloudEvents Distributed Tracing extension: the request span's context, stored
            # with the event, so that every delivery (however late, wherever) joins its trace.
            # Set here, not by the adapter: adapters are pure and never see tracing.
            event = msgspec.structs.replace(
                event, traceparent=trace.traceparent, tracestate=trace.tracestate or msgspec.UNSET
            )
        subscribers = self._router.subscribers_for(name, event.type)
        return NewEvent(
            id=event.id,
            source=name,
            type=event.type,
            received_at=received_at.timestamp(),
            body=encode_event(event),
            subscribers=subscribers,
            subject=event.subject or None,
            ordered=self._config.ordered(subscribers),
            status=event.data.status,
        )

    async def _store_event(
        self,
        name: str,
        event: CanonicalEvent,
        received_at: datetime,
        series: _SourceSeries,
        span: Span,
    ) -> Answer:
        new_event = self._new_event(name, event, received_at, span.context)
        subscribers = new_event.subscribers
        try:
            outcome = await self._store.accept(new_event)
        except StoreUnavailable as error:
            return Answer(
                503,
                {"error": "unavailable"},
                outcome="unavailable",
                event_id=event.id,
                detail=str(error),
            )
        if outcome == "accepted":
            # A duplicate stores nothing: the event keeps the first request's `traceparent`.
            span.event("stored")
            series.stored.inc()
            if subscribers:
                self._on_stored()
            else:
                series.unrouted.inc()
        return Answer(
            200,
            {"status": outcome, "id": event.id},
            outcome=outcome,
            event_id=event.id,
            type=event.type,
        )

    async def _store_events(
        self,
        name: str,
        events: Sequence[CanonicalEvent],
        received_at: datetime,
        series: _SourceSeries,
        span: Span,
    ) -> Answer:
        """A batch provider's request (docs/reference/providers.md `each`): its events in one
        commit, each with its own id and dedup; `duplicate` only when every one was stored already.
        Each carries the one request span's context."""
        trace = span.context
        new_events = [self._new_event(name, event, received_at, trace) for event in events]
        ids = [event.id for event in new_events]
        try:
            outcomes = await self._store.accept_many(new_events)
        except StoreUnavailable as error:
            return Answer(
                503,
                {"error": "unavailable"},
                outcome="unavailable",
                event_ids=ids,
                detail=str(error),
            )
        self._count_accepted(new_events, outcomes, series)
        if "accepted" in outcomes:
            span.event("stored")
        outcome: AcceptOutcome = (
            "duplicate" if outcomes and "accepted" not in outcomes else "accepted"
        )
        return Answer(
            200,
            {"status": outcome, "ids": ids},
            outcome=outcome,
            event_ids=ids,
            types=[event.type for event in new_events],
        )

    def _count_accepted(
        self,
        new_events: Sequence[NewEvent],
        outcomes: Sequence[AcceptOutcome],
        series: _SourceSeries,
    ) -> None:
        accepted = [
            event
            for event, outcome in zip(new_events, outcomes, strict=True)
            if outcome == "accepted"
        ]
        series.stored.inc(len(accepted))
        unrouted = sum(1 for event in accepted if not event.subscribers)
        series.unrouted.inc(unrouted)
        if unrouted < len(accepted):
            self._on_stored()

    async def _quarantine(
        self,
        settings: SourceSettings,
        adapter: Adapter,
        body: bytes,
        headers: dict[str, str],
        verification: str,
        error: InvalidPayload,
        received_at: datetime,
        series: _SourceSeries,
    ) -> Answer:
        try:
            quarantine_id = await self._store.quarantine(
                source=settings.name,
                received_at=received_at.timestamp(),
                body=body,
                headers=quarantinable_headers(headers, settings, adapter),
                verification=verification,
                error=error.detail,
            )
        except StoreUnavailable as unavailable:
            return Answer(
                503, {"error": "unavailable"}, outcome="unavailable", detail=str(unavailable)
            )
        series.quarantined.inc()
        return Answer(
            422,
            {"error": "invalid_payload", "detail": error.detail},
            outcome="invalid_payload",
            quarantine_id=str(quarantine_id),
            detail=error.detail,
        )


def _trace_carrier(scope: Scope, headers: Mapping[str, str]) -> Mapping[str, str]:
    """The request's W3C Trace Context headers as one value each. `headers` keeps the last of
    a repeated header; here several `tracestate` lines are one list, joined with commas (as
    W3C Trace Context and HTTP combine field lines), and of several `traceparent` the first
    counts, as OpenTelemetry's propagator reads them. Looked at only when one is there."""
    if "tracestate" not in headers and "traceparent" not in headers:
        return headers
    parents = [value for name, value in scope["headers"] if name == b"traceparent"]
    states = [value for name, value in scope["headers"] if name == b"tracestate"]
    carrier = {}
    if parents:
        carrier["traceparent"] = parents[0].decode("latin-1")
    if states:
        carrier["tracestate"] = ",".join(state.decode("latin-1") for state in states)
    return carrier


def _describe(
    span: Span,
    source: str,
    adapter: str | None,
    client: str | None,
    status: int,
    outcome: str,
    fields: Mapping[str, object] | None = None,
) -> None:
    """The answer on the request's span (docs/reference/traces.md). A refusal's `error.type` is its
    error word (the conventions' "component-specific, low cardinality identifier"); the span's
    status is an error only for a 5xx: a 4xx is the caller's failure, not the server's, and the
    conventions leave a server span's status unset for it."""
    if not span.recording:
        return
    attributes: dict[str, str | int] = {
        "http.response.status_code": status,
        "finrelay.source": source,
        "finrelay.outcome": outcome,
    }
    if adapter is not None:
        # A configured source: its path is one of the config's, not whatever a client sent.
        attributes["finrelay.adapter"] = adapter
        attributes["url.path"] = WEBHOOK_PREFIX + source
    if client is not None:
        attributes["client.address"] = client
    event_id = fields.get("event_id") if fields else None
    if isinstance(event_id, str):
        attributes["finrelay.event_id"] = event_id
    span.set(attributes)
    if status >= 500:
        span.fail(outcome)
    elif status >= 400:
        span.set({"error.type": outcome})

"""`POST /webhooks/{source}`: a provider's request in, a durable canonical event out (a batch
provider's several, in one commit, each with its own id and dedup: CONTRACT.md 1b `each`).

The checks run in the contract's order and the first that fails answers (CONTRACT.md 1):
unknown source 404 -> size 413 (without reading past the limit) -> address 403 ->
authentication 401 -> payload 422 (the raw body kept in quarantine) -> store 503.
The 200 is sent only once the event and its deliveries are committed and fsync'd.

This is the one hot path, so it is a plain ASGI handler rather than a Starlette endpoint: no
router trying every route, no Request or Response objects, the query string parsed only for
sources with a token, and each source's metric series resolved once. The rest of the app
(health, readiness, metrics) is ordinary Starlette (gateway/app.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network, ip_address
from urllib.parse import parse_qsl

import msgspec
import structlog
from prometheus_client import Counter, Histogram
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from adapters.base import Adapter
from adapters.errors import AuthenticationError, InvalidPayload
from adapters.request import InboundRequest
from adapters.source import SourceSettings
from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.request_id import request_id_of
from gateway.routing import Router
from gateway.store.base import AcceptOutcome, NewEvent, Store, StoreUnavailable
from schemas.event import CanonicalEvent, encode_event

__all__ = ["WEBHOOK_PREFIX", "Ingress", "client_address", "quarantinable_headers"]

log = structlog.get_logger("gateway.ingress")

WEBHOOK_PREFIX = "/webhooks/"

_STATUS_BY_CODE = {
    "forbidden_address": 403,
    "invalid_signature": 401,
    "invalid_token": 401,
}
# Never kept with a quarantined payload: they prove identity, and reprocessing needs no proof
# (the request was authenticated when it arrived).
_SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie")
# A refusal whose code has no status above (an adapter's new error nobody mapped yet) is still
# a refusal: 401 with this code, never a 500.
_UNMAPPED_REFUSAL = "unauthenticated"
_JSON_HEADERS = [(b"content-type", b"application/json")]

_encoder = msgspec.json.Encoder()


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...],
) -> str | None:
    """The client's address: the TCP peer, unless the peer is a trusted proxy; then the nearest
    address in X-Forwarded-For that is not itself a trusted proxy (right to left, since each
    proxy appends the address it saw and only the trusted ones' additions can be believed)."""
    if peer is None or not trusted_proxies or not forwarded_for:
        return peer
    candidate = peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    while _is_trusted(candidate, trusted_proxies) and hops:
        candidate = hops.pop()
    return candidate


def _is_trusted(address: str, proxies: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in proxies)


def quarantinable_headers(
    headers: Mapping[str, str], settings: SourceSettings, adapter: Adapter
) -> dict[str, str]:
    """The headers kept with a quarantined body: what an adapter may read again, minus anything
    that proves identity (credentials and signatures, the source's own signature header
    included)."""
    # The adapter's own signature headers (a described provider's `header`, whatever it is
    # called), the source's configured one (Finexer's is a setting), and any header whose name
    # says "signature".
    signatures = {*adapter.signature_headers, settings.signature_header.lower()}
    return {
        name: value
        for name, value in headers.items()
        if name not in _SECRET_HEADERS and name not in signatures and "signature" not in name
    }


class _Answer:
    """A JSON answer and what the request log line says about it."""

    __slots__ = ("content", "fields", "status")

    def __init__(self, status: int, content: Mapping[str, object], **fields: object) -> None:
        self.status = status
        self.content = content
        self.fields = fields


_TOO_LARGE = _Answer(413, {"error": "payload_too_large"}, outcome="payload_too_large")


def _cut_short(size: int, declared: str) -> _Answer:
    # Answered in case the client still listens (it usually does not: the server then sends
    # nothing), and logged with the request.
    expected = f" of {declared}" if declared else ""
    return _Answer(
        400,
        {"error": "incomplete_body"},
        outcome="incomplete_body",
        detail=f"the client closed the request after {size}{expected} bytes of its body",
    )


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
    ) -> None:
        self._config = config
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
        responder = _Responder(send, request_id)
        try:
            await self._handle(scope, receive, responder, started)
        except Exception:
            # What Starlette's error middleware would do: log it, answer 500 if still possible.
            log.exception("ingress_error", request_id=request_id)
            if not responder.started:
                await responder.json(500, {"error": "internal"})

    async def _handle(
        self, scope: Scope, receive: Receive, responder: _Responder, started: float
    ) -> None:
        request_id = responder.request_id
        name = scope["path"][len(WEBHOOK_PREFIX) :]
        client = self._client_of(scope)
        settings = self._config.sources.get(name)
        if settings is None:
            # The name came from the URL: not a metric label, and cut short in the answer and
            # the log alike.
            self._unknown.inc()
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
            await responder.json(405, {"error": "method_not_allowed"}, (b"allow", b"POST"))
            return

        series = self._series[name]
        series.received.inc()
        answer = await self._receive(scope, receive, name, settings, series, client)
        await responder.json(answer.status, answer.content)
        elapsed = time.perf_counter() - started
        series.answer(name, str(answer.fields["outcome"])).inc()
        series.latency.observe(elapsed)
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
    ) -> _Answer:
        adapter = self._adapters[name]
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        body = await self._read_body(headers, receive)
        if isinstance(body, _Answer):
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
                return _Answer(
                    401,
                    {"error": _UNMAPPED_REFUSAL},
                    outcome=_UNMAPPED_REFUSAL,
                    code=error.code,
                    detail=error.detail,
                )
            content = {"error": error.code}
            if error.code == "invalid_signature":
                content["detail"] = error.detail
            return _Answer(status, content, outcome=error.code, detail=error.detail)

        try:
            # A batch provider's body carries several events (CONTRACT.md 1b `each`).
            normalized = (
                adapter.normalize_all(body, headers, settings, received_at, verification)
                if adapter.batch
                else adapter.normalize(body, headers, settings, received_at, verification)
            )
        except InvalidPayload as error:
            return await self._quarantine(
                settings, adapter, body, headers, verification, error, received_at, series
            )
        if isinstance(normalized, CanonicalEvent):
            return await self._store_event(name, normalized, received_at, series)
        return await self._store_events(name, normalized, received_at, series)

    def _new_event(self, name: str, event: CanonicalEvent, received_at: datetime) -> NewEvent:
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
        self, name: str, event: CanonicalEvent, received_at: datetime, series: _SourceSeries
    ) -> _Answer:
        new_event = self._new_event(name, event, received_at)
        subscribers = new_event.subscribers
        try:
            outcome = await self._store.accept(new_event)
        except StoreUnavailable as error:
            return _Answer(
                503,
                {"error": "unavailable"},
                outcome="unavailable",
                event_id=event.id,
                detail=str(error),
            )
        if outcome == "accepted":
            series.stored.inc()
            if subscribers:
                self._on_stored()
            else:
                series.unrouted.inc()
        return _Answer(
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
    ) -> _Answer:
        """A batch provider's request (CONTRACT.md 1b `each`): its events in one commit, each
        with its own id and dedup; `duplicate` only when every one was stored already."""
        new_events = [self._new_event(name, event, received_at) for event in events]
        ids = [event.id for event in new_events]
        try:
            outcomes = await self._store.accept_many(new_events)
        except StoreUnavailable as error:
            return _Answer(
                503,
                {"error": "unavailable"},
                outcome="unavailable",
                event_ids=ids,
                detail=str(error),
            )
        self._count_accepted(new_events, outcomes, series)
        outcome: AcceptOutcome = (
            "duplicate" if outcomes and "accepted" not in outcomes else "accepted"
        )
        return _Answer(
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

    async def _read_body(self, headers: Mapping[str, str], receive: Receive) -> bytes | _Answer:
        """The whole body; or the answer when there is none to use: 413 as soon as it proves
        longer than the limit (the rest unread), 400 when the client cut it short."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            return _TOO_LARGE
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # A prefix of a body is not the body: verifying it fails at best, and a prefix
                # that happens to be valid JSON (or not JSON, for a token-authenticated source)
                # would be stored or quarantined as if the provider had sent it.
                return _cut_short(size, declared)
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return _TOO_LARGE
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if declared.isdigit() and size < int(declared):
            return _cut_short(size, declared)
        return b"".join(chunks)

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
    ) -> _Answer:
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
            return _Answer(
                503, {"error": "unavailable"}, outcome="unavailable", detail=str(unavailable)
            )
        series.quarantined.inc()
        return _Answer(
            422,
            {"error": "invalid_payload", "detail": error.detail},
            outcome="invalid_payload",
            quarantine_id=str(quarantine_id),
            detail=error.detail,
        )


class _Responder:
    """Answers one webhook request in JSON, with its `x-request-id`, and knows whether it has
    begun to (after that, an error can only be logged)."""

    __slots__ = ("request_id", "send", "started")

    def __init__(self, send: Send, request_id: str) -> None:
        self.send = send
        self.request_id = request_id
        self.started = False

    async def json(
        self, status: int, content: Mapping[str, object], *extra_headers: tuple[bytes, bytes]
    ) -> None:
        body = _encoder.encode(content)
        headers = [
            *_JSON_HEADERS,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", self.request_id.encode("ascii")),
            *extra_headers,
        ]
        self.started = True
        start: Message = {"type": "http.response.start", "status": status, "headers": headers}
        end: Message = {"type": "http.response.body", "body": body}
        cycle = getattr(self.send, "__self__", None)
        if not isinstance(cycle, RequestResponseCycle):
            await self.send(start)
            await self.send(end)
            return
        # uvicorn writes the head and the body to the transport one after the other, and
        # uvloop sends each at once: two send() system calls, two loopback segments, two
        # wake-ups of the client, for one small answer. Its cycle is given a transport that
        # keeps the head for the body's write (its send() writes, and may close, nothing else).
        transport = cycle.transport
        joined = _HeadWithBody(transport)
        cycle.transport = joined
        try:
            await self.send(start)
            await self.send(end)
        finally:
            cycle.transport = transport
            joined.release()


class _HeadWithBody(asyncio.Transport):
    """A transport that holds the first write (a response's head) and writes it with the next
    one (its body): one write where there were two."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._head = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._head:
            self._head = bytes(data)
            return
        head, self._head = self._head, b""
        self._transport.write(head + data)

    def release(self) -> None:
        """Write what is still held (a head whose body never came)."""
        if self._head and not self._transport.is_closing():
            self._transport.write(self._head)
        self._head = b""

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.release()
        self._transport.close()

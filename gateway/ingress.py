"""`POST /webhooks/{source}`: a provider's request in, a durable canonical event out.

The checks run in the contract's order and the first that fails answers (CONTRACT.md 1):
unknown source 404 -> size 413 (without reading past the limit) -> address 403 ->
authentication 401 -> payload 422 (the raw body kept in quarantine) -> store 503.
The 200 is sent only once the event and its deliveries are committed and fsync'd.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network, ip_address

import msgspec
import structlog
from starlette.requests import Request
from starlette.responses import Response

from adapters.errors import AuthenticationError, InvalidPayload
from adapters.registry import ADAPTERS
from adapters.request import InboundRequest
from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.routing import Router
from gateway.store.base import NewEvent, Store, StoreUnavailable
from schemas.event import encode_event

__all__ = ["Ingress", "client_address", "quarantinable_headers"]

log = structlog.get_logger("gateway.ingress")

_STATUS_BY_CODE = {
    "forbidden_address": 403,
    "invalid_signature": 401,
    "invalid_token": 401,
}
# Never kept with a quarantined payload: they prove identity, and reprocessing needs no proof
# (the request was authenticated when it arrived).
_SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie")

_encoder = msgspec.json.Encoder()


def _json(status: int, content: Mapping[str, str]) -> Response:
    return Response(_encoder.encode(content), status, media_type="application/json")


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


def quarantinable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers kept with a quarantined body: what an adapter may read again, minus anything
    that proves identity (credentials and signatures)."""
    return {
        name: value
        for name, value in headers.items()
        if name not in _SECRET_HEADERS and "signature" not in name
    }


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

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        request_id: str = request.scope["state"]["request_id"]
        name: str = request.path_params["source"]
        settings = self._config.sources.get(name)
        if settings is None:
            # The name came from the URL: not a metric label, and cut short in the answer.
            self._metrics.answered.labels(source="", outcome="unknown_source").inc()
            log.info("webhook", request_id=request_id, outcome="unknown_source", status=404)
            return _json(404, {"error": "unknown_source", "detail": f"no source {name[:64]!r}"})

        self._metrics.received.labels(source=name).inc()
        response, fields = await self._receive(request, name)
        elapsed = time.perf_counter() - started
        self._metrics.answered.labels(source=name, outcome=fields["outcome"]).inc()
        self._metrics.ingress_latency.labels(source=name).observe(elapsed)
        log.info(
            "webhook",
            request_id=request_id,
            source=name,
            status=response.status_code,
            latency_ms=round(elapsed * 1000, 3),
            **fields,
        )
        return response

    async def _receive(self, request: Request, name: str) -> tuple[Response, dict[str, str]]:
        settings = self._config.sources[name]
        adapter = ADAPTERS[settings.adapter]

        body = await self._read_body(request)
        if body is None:
            return _json(413, {"error": "payload_too_large"}), {"outcome": "payload_too_large"}

        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in request.scope["headers"]
        }
        peer = request.client.host if request.client else None
        inbound = InboundRequest(
            body=body,
            headers=headers,
            query=dict(request.query_params),
            client=client_address(peer, headers.get("x-forwarded-for"), self._proxies),
        )
        received_at = datetime.now(UTC)
        try:
            verification = adapter.verify(inbound, settings, received_at)
        except AuthenticationError as error:
            content = {"error": error.code}
            if error.code == "invalid_signature":
                content["detail"] = error.detail
            return _json(_STATUS_BY_CODE[error.code], content), {
                "outcome": error.code,
                "detail": error.detail,
            }

        try:
            event = adapter.normalize(body, headers, settings, received_at, verification)
        except InvalidPayload as error:
            return await self._quarantine(name, body, headers, verification, error, received_at)

        subscribers = self._router.subscribers_for(name, event.type)
        try:
            outcome = await self._store.accept(
                NewEvent(
                    id=event.id,
                    source=name,
                    type=event.type,
                    received_at=received_at.timestamp(),
                    body=encode_event(event),
                    subscribers=subscribers,
                )
            )
        except StoreUnavailable as error:
            return _json(503, {"error": "unavailable"}), {
                "outcome": "unavailable",
                "event_id": event.id,
                "detail": str(error),
            }
        if outcome == "accepted":
            self._metrics.stored.labels(source=name).inc()
            if subscribers:
                self._on_stored()
            else:
                self._metrics.unrouted.labels(source=name).inc()
        fields = {"outcome": outcome, "event_id": event.id, "type": event.type}
        return _json(200, {"status": outcome, "id": event.id}), fields

    async def _read_body(self, request: Request) -> bytes | None:
        """The body, or None as soon as it proves longer than the limit (the rest unread)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _quarantine(
        self,
        name: str,
        body: bytes,
        headers: dict[str, str],
        verification: str,
        error: InvalidPayload,
        received_at: datetime,
    ) -> tuple[Response, dict[str, str]]:
        try:
            quarantine_id = await self._store.quarantine(
                source=name,
                received_at=received_at.timestamp(),
                body=body,
                headers=quarantinable_headers(headers),
                verification=verification,
                error=error.detail,
            )
        except StoreUnavailable as unavailable:
            return _json(503, {"error": "unavailable"}), {
                "outcome": "unavailable",
                "detail": str(unavailable),
            }
        self._metrics.quarantined.labels(source=name).inc()
        return _json(422, {"error": "invalid_payload", "detail": error.detail}), {
            "outcome": "invalid_payload",
            "quarantine_id": str(quarantine_id),
            "detail": error.detail,
        }

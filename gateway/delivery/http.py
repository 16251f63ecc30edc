"""The HTTP subscriber: a Standard Webhooks POST, an httpx request over aiohttp's connection pool.

2xx is success; 408, 425, 429, 5xx, timeouts and connection errors are worth another attempt;
anything else, 3xx included (redirects are not followed: a moved endpoint is a configuration
change, not something to chase with signed payloads), fails the delivery at once.

An answer is the subscriber's to size, so at most MAX_ANSWER_BYTES of its body are read, as the
raw bytes on the wire (docs/reference/delivery.md): a body that declares or sends gigabytes, or that
decompresses to them, costs the gateway 64 KiB. A body is never decoded to judge the attempt,
so one that cannot be (a 200 whose gzip is garbage) still counts by its status.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import functools
import time
import zlib
from collections.abc import AsyncGenerator
from typing import ClassVar, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from gateway import __version__
from gateway.delivery.transport import (
    AttemptSpan,
    OutboundMessage,
    SendResult,
    SpanKindName,
    Transport,
)

__all__ = ["HttpTransport", "parse_retry_after", "url_for_traces"]

RETRYABLE_STATUSES = frozenset({408, 425, 429})
EXCERPT_BYTES = 512
MAX_ANSWER_BYTES = 64 * 1024


def url_for_traces(url: str) -> str:
    """`url` as a span may show it (`url.full`): credentials and every query value replaced by
    REDACTED, as OpenTelemetry's HTTP conventions ask. A subscriber's URL may carry a token in
    either place, under any name; the scheme, host, port, path and query keys stay readable."""
    parts = urlsplit(url)
    location = parts.netloc
    if "@" in location:
        location = "REDACTED:REDACTED@" + location.rpartition("@")[2]
    query = "&".join(
        f"{pair.partition('=')[0]}=REDACTED" if "=" in pair else pair
        for pair in parts.query.split("&")
        if pair
    )
    return urlunsplit((parts.scheme, location, parts.path, query, ""))


def _without_credentials(url: str) -> tuple[str, str | None]:
    """The URL without its `user:password@`, and those as a basic Authorization header's value
    (None without): percent-decoded, UTF-8, as httpx's `BasicAuth` sends them."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    plain = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
    return plain, "Basic " + base64.b64encode(pair).decode("ascii")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class HttpTransport(Transport):
    """httpx requests and responses over aiohttp's connection pool (httpx-aiohttp's transport).

    httpx's own pool (httpcore 1.0.9) polls every connection it holds on every request it
    assigns (httpcore PR #928, open): with 64 connections on uvloop a delivery cost 1.15 ms of
    CPU. The same deliveries through aiohttp's connection pool cost about 0.27 ms. The request
    goes to that transport directly, not through an `httpx.AsyncClient`: what the client adds
    per request (merging defaults, a cookie jar read and written, auth and redirect flows,
    event hooks) is nothing a delivery uses, and cost about as much again as the transport
    (bench/http_client.py measures both). So the defaults are this class's own: the headers
    below, every timeout `timeout_seconds`, no redirects, no cookies, no proxy from the
    environment (a subscriber's URL is where its deliveries go).
    The dispatcher keeps at most `max_in_flight` sends under way; the pool holds as many.
    """

    def __init__(self, url: str, timeout_seconds: float, max_in_flight: int) -> None:
        # Credentials in the URL become a basic Authorization header, and leave the URL:
        # aiohttp refuses a request that carries them both ways.
        plain, credentials = _without_credentials(url)
        self.url = plain
        self._target = httpx.URL(plain)
        self._configured_url = url
        self._headers = {
            "user-agent": f"finrelay/{__version__}",
            "accept": "*/*",
            "accept-encoding": "gzip, deflate",  # what `_excerpt` can read
            "content-type": "application/cloudevents+json",
        }
        if credentials is not None:
            self._headers["authorization"] = credentials
        every = dict.fromkeys(("connect", "read", "write", "pool"), timeout_seconds)
        self._extensions = {"timeout": every}
        self._transport = AiohttpTransport(
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            )
        )

    span_kind: ClassVar[SpanKindName] = "client"

    async def send(self, message: OutboundMessage) -> SendResult:
        headers = {
            **self._headers,
            "webhook-id": message.webhook_id,
            "webhook-timestamp": str(message.webhook_timestamp),
        }
        if message.webhook_signature is not None:
            headers["webhook-signature"] = message.webhook_signature
        # W3C Trace Context: the subscriber's own spans join the attempt's trace.
        if message.traceparent is not None:
            headers["traceparent"] = message.traceparent
            if message.tracestate:
                headers["tracestate"] = message.tracestate
        request = httpx.Request(
            "POST", self._target, content=message.body, headers=headers, extensions=self._extensions
        )
        try:
            response = await self._transport.handle_async_request(request)
            try:
                head = await _read_at_most(response, MAX_ANSWER_BYTES)
            finally:
                await response.aclose()
        except (httpx.TransportError, aiohttp.ClientError) as error:
            return SendResult(outcome="retry", error=_failure(error))
        status = response.status_code
        excerpt = _excerpt(head, response.headers.get("content-encoding", ""))
        if 200 <= status < 300:
            return SendResult(outcome="delivered", status_code=status, response_excerpt=excerpt)
        retryable = status in RETRYABLE_STATUSES or status >= 500
        return SendResult(
            outcome="retry" if retryable else "failed",
            status_code=status,
            error=f"HTTP {status}",
            retry_after=parse_retry_after(response.headers.get("retry-after"), time.time()),
            response_excerpt=excerpt,
        )

    def attempt_span(self, event_type: str, source: str, attempt: int) -> AttemptSpan:
        # OpenTelemetry's HTTP client span: named by the method alone (a URL is not
        # low-cardinality enough for a name), the URL redacted.
        attributes = dict(self._span_attributes)
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        return AttemptSpan("POST", attributes)

    @functools.cached_property
    def _span_attributes(self) -> dict[str, str | int]:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return {
            "http.request.method": "POST",
            # As configured: credentials there show as REDACTED:REDACTED (the conventions' way
            # of saying the request carried some).
            "url.full": url_for_traces(self._configured_url),
            "server.address": parts.hostname or "",
            "server.port": port,
        }

    async def close(self) -> None:
        await self._transport.aclose()


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """Up to `limit` bytes of the body as sent (aiter_raw: httpx-aiohttp asks aiohttp not to
    decompress, and httpx does not either on this path), in aiohttp's 16 KiB chunks; the rest
    is never read. A body within the limit is read whole, so its connection can be reused;
    closing a response read only in part closes its connection."""
    chunks: list[bytes] = []
    size = 0
    # Closed at once when left early, rather than whenever the collector finds it.
    raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    async with contextlib.aclosing(raw) as stream:
        async for chunk in stream:
            chunks.append(chunk[: limit - size])
            size += len(chunks[-1])
            if size >= limit:
                break
    return b"".join(chunks)


def _excerpt(head: bytes, content_encoding: str) -> str | None:
    """The start of the answer for operators, decompressed (within EXCERPT_BYTES) when it is
    gzip or deflate; None when it cannot be decoded."""
    encoding = content_encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            # wbits 32 + MAX_WBITS: a gzip or zlib header, whichever it has.
            head = zlib.decompressobj(32 + zlib.MAX_WBITS).decompress(head, EXCERPT_BYTES)
        except zlib.error:
            return None
    elif encoding not in ("", "identity"):
        return None
    return head[:EXCERPT_BYTES].decode("utf-8", "replace")


def _failure(error: Exception) -> str:
    """What went wrong, from aiohttp's own exception where there is one: httpx-aiohttp maps
    every aiohttp connection error, a refused connection included, to httpx.ConnectTimeout."""
    cause = error.__cause__ if isinstance(error.__cause__, Exception) else error
    if isinstance(cause, TimeoutError) or (
        cause is error and isinstance(error, httpx.TimeoutException)
    ):
        return "timeout"  # aiohttp's ServerTimeoutError is a TimeoutError
    return f"connection error: {type(cause).__name__}"

"""The one interface every subscriber kind implements, as httpx's transports do for I/O.

The dispatcher hands a transport an `OutboundMessage` (the event's bytes, encoded once, and the
Standard Webhooks values of this attempt) and gets back a `SendResult`: it never knows whether it
is driving HTTP, a file or a queue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import msgspec

__all__ = ["AttemptSpan", "OutboundMessage", "SendResult", "SpanKindName", "Transport"]

# An attempt span's kind (docs/reference/traces.md): client for HTTP, producer for queues, internal
# for a file. Names, not OpenTelemetry's enum: transports know nothing of the tracing library.
SpanKindName = Literal["client", "producer", "internal"]


class OutboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: str
    webhook_timestamp: int
    webhook_signature: str | None
    body: bytes
    # The event's canonical type and source name, for queue subscribers' `{type}` / `{source}`
    # templates (docs/reference/queues.md); HTTP and file subscribers ignore them.
    event_type: str = ""
    source: str = ""
    # The attempt span's W3C Trace Context (docs/reference/traces.md), sent with the message so that
    # the subscriber's own spans join the event's trace; None with tracing off.
    traceparent: str | None = None
    tracestate: str | None = None


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """`delivered`; `retry` (worth another attempt); `failed` (permanent: a dead letter now)."""

    outcome: Literal["delivered", "retry", "failed"]
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    response_excerpt: str | None = None


class AttemptSpan(msgspec.Struct, frozen=True):
    """How an attempt's span names itself, and the attributes the transport adds (OpenTelemetry
    semantic conventions: `http.*`, `url.full`, `messaging.*`)."""

    name: str
    attributes: dict[str, str | int]


class Transport(ABC):
    """Sends messages to one subscriber."""

    span_kind: ClassVar[SpanKindName] = "internal"

    @abstractmethod
    async def send(self, message: OutboundMessage) -> SendResult:
        """Send one message; report the outcome instead of raising."""

    def attempt_span(self, event_type: str, source: str, attempt: int) -> AttemptSpan:
        """The name and attributes of the span of `attempt` (1 for the first) to send an event
        of `event_type` from `source`; asked only when spans are recorded. Never a secret: no
        credential or query of a URL."""
        return AttemptSpan("send", {})

    async def close(self) -> None:  # noqa: B027 - most transports hold nothing to release
        """Release connections or files."""

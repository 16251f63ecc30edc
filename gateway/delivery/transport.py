"""The one interface every subscriber kind implements, as httpx's transports do for I/O.

The dispatcher hands a transport an `OutboundMessage` (the event's bytes, encoded once, and the
Standard Webhooks values of this attempt) and gets back a `SendResult`: it never knows whether it
is driving HTTP, a file or a queue.

A broker takes many messages in the round trip one costs (a Redis pipeline, JetStream or AMQP
acknowledgements awaited together), and the gateway's own bookkeeping per send (a task, a store
write, a circuit update) was what capped delivery at a fraction of the broker's speed. So a
transport may say it `batches`: the dispatcher then hands it the subscriber's claimed
deliveries together (`send_batch`), one message and one result each, and records them in one
store write. Each message is still its own attempt, with its own answer.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import msgspec

__all__ = [
    "AttemptSpan",
    "OutboundMessage",
    "SendResult",
    "SpanKindName",
    "Transport",
    "unexpected_error",
]

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
    # Whether the dispatcher sends this subscriber's deliveries in batches (`send_batch`): a
    # broker that answers many messages in one round trip. HTTP and file subscribers send each
    # delivery on its own: a webhook endpoint answers one request at a time anyway.
    batches: ClassVar[bool] = False

    @abstractmethod
    async def send(self, message: OutboundMessage) -> SendResult:
        """Send one message; report the outcome instead of raising."""

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Send several messages; one result each, in order, reported instead of raised. By
        default their sends run concurrently; a broker's transport sends them together."""
        answers = await asyncio.gather(
            *(self.send(message) for message in messages), return_exceptions=True
        )
        return [
            answer if isinstance(answer, SendResult) else unexpected_error(answer)
            for answer in answers
        ]

    def attempt_span(self, event_type: str, source: str, attempt: int) -> AttemptSpan:
        """The name and attributes of the span of `attempt` (1 for the first) to send an event
        of `event_type` from `source`; asked only when spans are recorded. Never a secret: no
        credential or query of a URL."""
        return AttemptSpan("send", {})

    async def close(self) -> None:  # noqa: B027 - most transports hold nothing to release
        """Release connections or files."""


def unexpected_error(error: BaseException) -> SendResult:
    """A send that raised instead of answering: a failed attempt, retried. Its type only: a
    message may quote a URL's credentials or the subscriber's answer."""
    return SendResult(outcome="retry", error=f"unexpected error: {type(error).__name__}")

"""The Redis Streams subscriber: `XADD <stream> [MAXLEN ~ <maxlen>] *` (docs/reference/queues.md).

Each entry has the fields `webhook-id`, `webhook-timestamp`, `webhook-signature` (with a secret),
`content-type` and `body` (the event bytes). XADD answering an entry id is the broker's
acknowledgement.

One connection per subscriber, pipelined: a batch's entries are one pipeline of XADDs (each
answered with its own entry id or error), and the sends and batches waiting while a pipeline is
on the wire go out together in the next one (as the file subscriber's lines share an fsync), so
`max_in_flight` concurrent sends cost one round trip, not `max_in_flight` connections. redis-py
connects on the first command and again after a connection is lost; a broker that is down,
restarting or refusing us is a retryable outcome, never an exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.delivery.settings.redis_streams import RedisSubscriber
from gateway.delivery.transport import (
    AttemptSpan,
    OutboundMessage,
    SendResult,
    SpanKindName,
    Transport,
)

__all__ = ["RedisStreamsTransport"]

CONTENT_TYPE = b"application/cloudevents+json"
_INTERRUPTED = SendResult(outcome="retry", error="interrupted before Redis answered")


class _Pending:
    """One send waiting for a pipeline; `result` is set once the pipeline that took it ends."""

    __slots__ = ("fields", "result")

    def __init__(self, fields: dict[bytes, bytes]) -> None:
        self.fields = fields
        self.result: SendResult | None = None


class RedisStreamsTransport(Transport):
    span_kind: ClassVar[SpanKindName] = "producer"
    batches: ClassVar[bool] = True

    def __init__(self, config: RedisSubscriber) -> None:
        self.stream = config.stream
        self.maxlen = config.maxlen
        # One connection: the pipeline lock below means no second one is ever asked for. No
        # retries inside redis-py: a failed attempt goes back to the dispatcher's schedule.
        self._client = Redis.from_url(
            config.url.reveal(),
            max_connections=1,
            socket_connect_timeout=config.timeout_seconds,
            socket_timeout=config.timeout_seconds,
            retry=Retry(NoBackoff(), 0),
        )
        self._waiting: list[_Pending] = []
        self._pipeline_lock = asyncio.Lock()

    async def send(self, message: OutboundMessage) -> SendResult:
        (result,) = await self.send_batch([message])
        return result

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if not messages:
            return []
        pendings = [_Pending(_fields(message)) for message in messages]
        self._waiting.extend(pendings)
        try:
            async with self._pipeline_lock:
                if pendings[-1].result is None:  # no earlier pipeline took them: this takes all
                    batch, self._waiting = self._waiting, []
                    await self._xadd(batch)
        except asyncio.CancelledError:
            # The dispatcher's deadline while waiting for the pipeline: not sent at all.
            mine = set(pendings)
            self._waiting = [pending for pending in self._waiting if pending not in mine]
            raise
        # Every pipeline sets its whole batch's results, and takes a batch's entries together.
        return [pending.result or _INTERRUPTED for pending in pendings]

    async def _xadd(self, batch: list[_Pending]) -> None:
        """XADD every entry of `batch` in one pipeline and set each one's result, whatever
        happens (a cancelled pipeline, the dispatcher's deadline, included)."""
        try:
            pipeline = self._client.pipeline(transaction=False)
            for pending in batch:
                pipeline.xadd(
                    self.stream,
                    pending.fields,  # type: ignore[arg-type]  # bytes keys and values are fine
                    maxlen=self.maxlen,
                    approximate=True,
                )
            replies = await pipeline.execute(raise_on_error=False)
            for pending, reply in zip(batch, replies, strict=True):
                pending.result = _outcome(reply)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
            failed = SendResult(outcome="retry", error=_unreachable(error))
            for pending in batch:
                pending.result = failed
        finally:
            for pending in batch:
                if pending.result is None:
                    pending.result = _INTERRUPTED

    def attempt_span(self, event_type: str, source: str, attempt: int) -> AttemptSpan:
        return AttemptSpan(
            f"send {self.stream}",
            {
                "messaging.system": "redis",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": self.stream,
            },
        )

    async def close(self) -> None:
        await self._client.aclose()


def _fields(message: OutboundMessage) -> dict[bytes, bytes]:
    fields = {
        b"webhook-id": message.webhook_id.encode(),
        b"webhook-timestamp": str(message.webhook_timestamp).encode(),
        b"content-type": CONTENT_TYPE,
        b"body": message.body,
    }
    if message.webhook_signature is not None:
        fields[b"webhook-signature"] = message.webhook_signature.encode()
    # W3C Trace Context (docs/reference/traces.md): a consumer continues the attempt's trace.
    if message.traceparent is not None:
        fields[b"traceparent"] = message.traceparent.encode()
        if message.tracestate:
            fields[b"tracestate"] = message.tracestate.encode()
    return fields


def _outcome(reply: object) -> SendResult:
    if isinstance(reply, bytes | str):  # the entry id
        return SendResult(outcome="delivered")
    if isinstance(reply, redis_errors.ResponseError):
        # Redis's own words (WRONGTYPE, OOM, NOPERM...): quote no URL, name no password.
        return SendResult(outcome="retry", error=f"Redis refused the XADD: {reply}")
    if isinstance(reply, Exception):
        return SendResult(outcome="retry", error=_unreachable(reply))
    return SendResult(outcome="retry", error=f"unexpected XADD reply: {type(reply).__name__}")


def _unreachable(error: BaseException) -> str:
    if isinstance(error, redis_errors.TimeoutError | TimeoutError):
        return "Redis timeout"
    if isinstance(error, redis_errors.AuthenticationError):
        return "Redis refused the credentials"
    # The exception's type only: redis-py's messages name the host and may grow to name more.
    return f"Redis unreachable: {type(error).__name__}"

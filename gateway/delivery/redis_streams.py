"""The Redis Streams subscriber: `XADD <stream> [MAXLEN ~ <maxlen>] *` (docs/reference/queues.md).

Each entry has the fields `webhook-id`, `webhook-timestamp`, `webhook-signature` (with a secret),
`content-type` and `body` (the event bytes). XADD answering an entry id is the broker's
acknowledgement.

One connection per subscriber, pipelined: a batch's entries are written as one pipeline of
XADDs (each answered with its own entry id or error), and the sends and batches waiting while a
pipeline is on the wire go out together in the next one (as the file subscriber's lines share an
fsync), so `max_in_flight` concurrent sends cost one round trip, not `max_in_flight`
connections. redis-py connects on the first send and again after a connection is lost; a broker
that is down, restarting or refusing us is a retryable outcome, never an exception.

Every entry is packed and its reply read on the event loop that also signs, records and logs
each message, so what the client does per entry is the gateway's cost per message. A pipeline
is therefore the XADDs packed by hiredis (as redis-py's synchronous client packs commands),
written on redis-py's connection and answered through its parser, reply by reply: 11 to 14 us
of CPU per entry (a client alone, pipelines of 32 1 KB events, on this 2-CPU machine), against
28 to 32 through redis-py's asyncio `Pipeline`, which packs in Python and, with a socket
timeout, sets a timer per reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

import hiredis
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
_DELIVERED = SendResult(outcome="delivered")


class _Pending:
    """One send waiting for a pipeline: its XADD, packed; `result` is set once the pipeline
    that took it ends."""

    __slots__ = ("command", "result")

    def __init__(self, command: bytes) -> None:
        self.command = command
        self.result: SendResult | None = None


class RedisStreamsTransport(Transport):
    span_kind: ClassVar[SpanKindName] = "producer"
    batches: ClassVar[bool] = True

    def __init__(self, config: RedisSubscriber) -> None:
        self.stream = config.stream
        # What every XADD starts with, as redis-py's `xadd(stream, fields, maxlen=...,
        # approximate=True)` writes it.
        self._head: tuple[str | int, ...] = ("XADD", config.stream)
        if config.maxlen is not None:
            self._head += ("MAXLEN", "~", config.maxlen)
        self._head += ("*",)
        # One connection: the pipeline lock below means no second one is ever asked for. No
        # retries inside redis-py: a failed attempt goes back to the dispatcher's schedule. No
        # socket timeout (redis-py's default is 5 s): every send runs under the dispatcher's
        # deadline of `timeout_seconds` (`Dispatcher._send_batch`), and redis-py drops a
        # connection whose read that deadline cancels.
        self._client = Redis.from_url(
            config.url.reveal(),
            max_connections=1,
            socket_connect_timeout=config.timeout_seconds,
            socket_timeout=None,
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
        pendings = [_Pending(self._xadd_command(message)) for message in messages]
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
        """XADD every entry of `batch` in one write and set each one's result from its own
        reply, whatever happens (a lost connection, the dispatcher's deadline, included): an
        entry answered before the connection was lost keeps its entry id."""
        pool = self._client.connection_pool
        try:
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # untyped upstream
            try:
                await connection.send_packed_command([pending.command for pending in batch])
                for pending in batch:
                    try:
                        reply = await connection.read_response()
                    except redis_errors.ResponseError as refused:
                        reply = refused  # this entry's alone, read whole: the rest follow
                    pending.result = _outcome(reply)
            finally:
                await pool.release(connection)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as error:
            failed = SendResult(outcome="retry", error=_unreachable(error))
            for pending in batch:
                if pending.result is None:
                    pending.result = failed
        finally:
            for pending in batch:
                if pending.result is None:
                    pending.result = _INTERRUPTED

    def _xadd_command(self, message: OutboundMessage) -> bytes:
        """The XADD of `message`'s entry, packed. Fields in this order: `webhook-id`,
        `webhook-timestamp`, `content-type`, `body`, then `webhook-signature` (with a secret),
        `traceparent` and `tracestate` (W3C Trace Context, docs/reference/traces.md: a consumer
        continues the attempt's trace)."""
        args: list[str | int | bytes] = [
            *self._head,
            b"webhook-id",
            message.webhook_id,
            b"webhook-timestamp",
            message.webhook_timestamp,
            b"content-type",
            CONTENT_TYPE,
            b"body",
            message.body,  # the event's bytes as stored: copied once, into the packed command
        ]
        if message.webhook_signature is not None:
            args += (b"webhook-signature", message.webhook_signature)
        if message.traceparent is not None:
            args += (b"traceparent", message.traceparent)
            if message.tracestate:
                args += (b"tracestate", message.tracestate)
        packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]  # stub: 1-tuple
        return packed

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


def _outcome(reply: object) -> SendResult:
    if isinstance(reply, bytes | str):  # the entry id
        return _DELIVERED
    if isinstance(reply, redis_errors.ResponseError):
        # Redis's own words (WRONGTYPE, OOM, NOPERM...): quote no URL, name no password.
        return SendResult(outcome="retry", error=f"Redis refused the XADD: {reply}")
    return SendResult(outcome="retry", error=f"unexpected XADD reply: {type(reply).__name__}")


def _unreachable(error: BaseException) -> str:
    if isinstance(error, redis_errors.TimeoutError | TimeoutError):
        return "Redis timeout"
    if isinstance(error, redis_errors.AuthenticationError):
        return "Redis refused the credentials"
    # The exception's type only: redis-py's messages name the host and may grow to name more.
    return f"Redis unreachable: {type(error).__name__}"

"""The NATS JetStream subscriber: a publish on `<subject>` acknowledged by the stream
(docs/reference/queues.md).

The payload is the event bytes; the headers are `webhook-id`, `webhook-timestamp`,
`webhook-signature` (with a secret), `content-type` and `Nats-Msg-Id` = the event id, so the
stream's duplicate window drops a second copy (a retry whose first PubAck was lost, a replay).
The stream's PubAck, a duplicate's included, is success; no stream capturing the subject (no
responders) is a failed attempt with that said, retried like a 5xx.

One connection per subscriber, made on the first send: JetStream publishes are requests whose
answers are matched by inbox, so `max_in_flight` of them share it, and a batch's PubAcks are
awaited together (`publish_async`: one future per message, not a request and a task each).
nats-py reconnects by itself once connected; a first connection that fails is tried again by the
next send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

from gateway.delivery.connecting import SharedConnect
from gateway.delivery.settings.nats_jetstream import NatsSubscriber
from gateway.delivery.templates import render_template
from gateway.delivery.transport import (
    AttemptSpan,
    OutboundMessage,
    SendResult,
    SpanKindName,
    Transport,
)

__all__ = ["NatsJetStreamTransport"]

log = structlog.get_logger("gateway.delivery")

CONTENT_TYPE = "application/cloudevents+json"
# How soon nats-py tries again after losing the server; it never stops trying (-1).
RECONNECT_WAIT_SECONDS = 0.5

# nats-py logs unexpected read errors in plain text on its own logger; the dispatcher records
# (and logs as JSON) every failed attempt already.
logging.getLogger("nats").setLevel(logging.CRITICAL)


class NatsJetStreamTransport(Transport):
    span_kind: ClassVar[SpanKindName] = "producer"
    batches: ClassVar[bool] = True

    def __init__(self, config: NatsSubscriber) -> None:
        self.name = config.name
        self.subject = config.subject
        self._url = config.url
        self._timeout = config.timeout_seconds
        self._client: Client | None = None
        self._jetstream: JetStreamContext | None = None
        self._connect = SharedConnect[JetStreamContext]()

    def _connected(self) -> JetStreamContext | None:
        """JetStream on the connection, while nats-py keeps it (connected or reconnecting)."""
        if self._jetstream is None or self._client is None or self._client.is_closed:
            return None
        return self._jetstream

    async def _open(self) -> JetStreamContext:
        """A new connection: the first one, or after nats-py gave up on the last."""
        client = await nats.connect(
            self._url.reveal(),
            connect_timeout=max(1, int(self._timeout)),
            allow_reconnect=True,
            # The first connection gives up after two tries (this attempt fails, the
            # next send tries again); once connected, nats-py never stops reconnecting.
            max_reconnect_attempts=1,
            reconnect_time_wait=RECONNECT_WAIT_SECONDS,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        client.options["max_reconnect_attempts"] = -1
        self._client = client
        self._jetstream = client.jetstream(timeout=self._timeout)
        return self._jetstream

    async def send(self, message: OutboundMessage) -> SendResult:
        (result,) = await self.send_batch([message])
        return result

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Publish every message, then wait for their PubAcks together (within the subscriber's
        timeout): one future each, matched by its reply inbox, and no task per message."""
        try:
            jetstream = self._connected() or await self._connect.get(self._connected, self._open)
        except (OSError, TimeoutError, nats.errors.Error) as error:
            return [_unreachable(error)] * len(messages)
        subjects = [
            render_template(self.subject, message.event_type, message.source)
            for message in messages
        ]
        acks: list[asyncio.Future[PubAck] | SendResult] = []
        try:
            for message, subject in zip(messages, subjects, strict=True):
                try:
                    acks.append(
                        await jetstream.publish_async(
                            subject, message.body, headers=_headers(message)
                        )
                    )
                except (OSError, nats.errors.Error) as error:
                    acks.append(_unreachable(error))
            waiting = [ack for ack in acks if isinstance(ack, asyncio.Future)]
            if waiting:
                await asyncio.wait(waiting, timeout=self._timeout)
        finally:
            # Unanswered (the deadline, ours or the dispatcher's): nats-py forgets the inbox.
            for ack in acks:
                if isinstance(ack, asyncio.Future):
                    ack.cancel()
        return [
            ack if isinstance(ack, SendResult) else _acknowledged(ack, subject)
            for ack, subject in zip(acks, subjects, strict=True)
        ]

    def attempt_span(self, event_type: str, source: str, attempt: int) -> AttemptSpan:
        subject = render_template(self.subject, event_type, source)
        return AttemptSpan(
            f"send {subject}",
            {
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": subject,
            },
        )

    # nats-py reports what happens to the connection here; by default it would print the
    # server's URL, credentials included, to its own logger.
    async def _on_error(self, error: Exception) -> None:
        log.info("nats_error", subscriber=self.name, error=type(error).__name__)

    async def _on_disconnected(self) -> None:
        log.warning("nats_disconnected", subscriber=self.name, url=self._url.masked)

    async def _on_reconnected(self) -> None:
        log.info("nats_reconnected", subscriber=self.name, url=self._url.masked)

    async def close(self) -> None:
        if self._client is not None and not self._client.is_closed:
            # Already gone: nothing held to release.
            with contextlib.suppress(OSError, TimeoutError, nats.errors.Error):
                await self._client.close()


def _headers(message: OutboundMessage) -> dict[str, str]:
    headers = {
        "webhook-id": message.webhook_id,
        "webhook-timestamp": str(message.webhook_timestamp),
        "content-type": CONTENT_TYPE,
        "Nats-Msg-Id": message.webhook_id,
    }
    if message.webhook_signature is not None:
        headers["webhook-signature"] = message.webhook_signature
    # W3C Trace Context (docs/reference/traces.md): a consumer continues the attempt's trace.
    if message.traceparent is not None:
        headers["traceparent"] = message.traceparent
        if message.tracestate:
            headers["tracestate"] = message.tracestate
    return headers


def _acknowledged(ack: asyncio.Future[PubAck], subject: str) -> SendResult:
    """What became of one publish: the stream's PubAck (a duplicate's included), its refusal,
    nobody capturing the subject, or no answer in time."""
    if ack.cancelled():
        return SendResult(outcome="retry", error="NATS timeout: no PubAck")
    error = ack.exception()
    if error is None:
        return SendResult(outcome="delivered")
    if isinstance(error, nats.js.errors.NoStreamResponseError):
        return SendResult(outcome="retry", error=f"no JetStream stream captures {subject!r}")
    if isinstance(error, nats.js.errors.APIError):
        # The stream's own refusal (full, sealed, wrong expected stream...).
        return SendResult(outcome="retry", error=f"JetStream refused: {error.description}")
    if isinstance(error, nats.errors.TimeoutError | TimeoutError):
        return SendResult(outcome="retry", error="NATS timeout: no PubAck")
    return _unreachable(error)


def _unreachable(error: BaseException) -> SendResult:
    return SendResult(outcome="retry", error=f"NATS unreachable: {type(error).__name__}")

"""The RabbitMQ (AMQP 0-9-1) subscriber: a confirmed, mandatory, persistent `basic.publish`
(docs/reference/queues.md).

To `<exchange>` with `<routing_key>`; properties `content_type` application/cloudevents+json,
`message_id` = the event id, `timestamp` = the attempt's webhook-timestamp, delivery mode 2
(persistent), and headers `webhook-id`, `webhook-timestamp`, `webhook-signature` (with a secret),
all strings. Only `basic.ack` on the channel in publisher-confirm mode is success: a
`basic.return` (no queue is bound for the routing key; RabbitMQ acks it after returning it), a
`basic.nack`, an exchange that does not exist (RabbitMQ closes the channel: 404) and a lost
connection are failed attempts, retried.

One connection and one confirm channel per subscriber, opened on the first send and again after
either closes: confirms are matched by delivery tag, so `max_in_flight` publishes are
outstanding on the one channel at once, and a batch's are published together and their confirms
awaited together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

import aiormq
import aiormq.abc
from pamqp.commands import Basic

from gateway.delivery.connecting import SharedConnect
from gateway.delivery.settings.amqp import AmqpSubscriber
from gateway.delivery.templates import render_template
from gateway.delivery.transport import (
    AttemptSpan,
    OutboundMessage,
    SendResult,
    SpanKindName,
    Transport,
)

__all__ = ["AmqpTransport"]

CONTENT_TYPE = "application/cloudevents+json"
PERSISTENT = 2  # AMQP delivery mode: written to disk by a durable queue

# aiormq reports every failed connection attempt in plain text on its own logger; each attempt
# is recorded (and logged as JSON) by the dispatcher already, with the URL never shown.
logging.getLogger("aiormq").setLevel(logging.CRITICAL)


class AmqpTransport(Transport):
    span_kind: ClassVar[SpanKindName] = "producer"
    batches: ClassVar[bool] = True

    def __init__(self, config: AmqpSubscriber) -> None:
        self.exchange = config.exchange
        self.routing_key = config.routing_key
        self._url = config.url
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._connect = SharedConnect[aiormq.abc.AbstractChannel]()

    def _open_channel(self) -> aiormq.abc.AbstractChannel | None:
        """The confirm channel while it and its connection are open."""
        channel, connection = self._channel, self._connection
        if channel is None or channel.is_closed or connection is None or connection.is_closed:
            return None
        return channel

    async def _reopen(self) -> aiormq.abc.AbstractChannel:
        """A new confirm channel, on a new connection if that was lost too (RabbitMQ closes
        just the channel that published to a missing exchange)."""
        if self._connection is None or self._connection.is_closed:
            self._channel = None
            self._connection = await aiormq.connect(self._url.reveal())
        # on_return_raises: a returned (unroutable) message fails its publish.
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        return self._channel

    async def send(self, message: OutboundMessage) -> SendResult:
        (result,) = await self.send_batch([message])
        return result

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Every message published on the one confirm channel, their confirms awaited
        together: RabbitMQ matches each to its delivery tag."""
        try:
            channel = self._open_channel() or await self._connect.get(
                self._open_channel, self._reopen
            )
        except (OSError, aiormq.exceptions.AMQPError, RuntimeError) as error:
            failed = SendResult(outcome="retry", error=f"RabbitMQ unreachable: {_describe(error)}")
            return [failed] * len(messages)
        if len(messages) == 1:
            return [await self._publish(channel, messages[0])]
        return list(await asyncio.gather(*(self._publish(channel, m) for m in messages)))

    async def _publish(
        self, channel: aiormq.abc.AbstractChannel, message: OutboundMessage
    ) -> SendResult:
        headers: dict[str, aiormq.abc.FieldValue] = {
            "webhook-id": message.webhook_id,
            "webhook-timestamp": str(message.webhook_timestamp),
        }
        if message.webhook_signature is not None:
            headers["webhook-signature"] = message.webhook_signature
        # W3C Trace Context (docs/reference/traces.md): a consumer continues the attempt's trace.
        if message.traceparent is not None:
            headers["traceparent"] = message.traceparent
            if message.tracestate:
                headers["tracestate"] = message.tracestate
        properties = aiormq.spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            message_id=message.webhook_id,
            timestamp=datetime.fromtimestamp(message.webhook_timestamp, UTC),
            headers=headers,
        )
        routing_key = render_template(self.routing_key, message.event_type, message.source)
        try:
            confirmation = await channel.basic_publish(
                message.body,
                exchange=self.exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
            )
        except aiormq.exceptions.PublishError as error:
            return SendResult(
                outcome="retry",
                error=f"unroutable: returned by RabbitMQ ({error.args[0]}): no queue is bound"
                f" to exchange {self.exchange!r} for routing key {routing_key!r}",
            )
        except aiormq.exceptions.DeliveryError:
            return SendResult(outcome="retry", error="RabbitMQ refused the message (basic.nack)")
        except aiormq.exceptions.ChannelNotFoundEntity:
            return SendResult(
                outcome="retry", error=f"the exchange {self.exchange!r} does not exist"
            )
        except aiormq.exceptions.ChannelClosed as error:
            return SendResult(outcome="retry", error=f"RabbitMQ closed the channel: {error}")
        except (OSError, aiormq.exceptions.AMQPError, RuntimeError) as error:
            # RuntimeError: aiormq's word for a channel or connection closed under a publish.
            return SendResult(outcome="retry", error=f"RabbitMQ unreachable: {_describe(error)}")
        if not isinstance(confirmation, Basic.Ack):
            return SendResult(outcome="retry", error="RabbitMQ refused the message (basic.nack)")
        return SendResult(outcome="delivered")

    def attempt_span(self, event_type: str, source: str, attempt: int) -> AttemptSpan:
        # OpenTelemetry's RabbitMQ conventions: the destination is the exchange ("" for the
        # default one), the routing key an attribute of its own. The span is named after the
        # routing key when the exchange is the default (it names the queue then).
        routing_key = render_template(self.routing_key, event_type, source)
        return AttemptSpan(
            f"send {self.exchange or routing_key}",
            {
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": self.exchange,
                "messaging.rabbitmq.destination.routing_key": routing_key,
            },
        )

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            # Already gone: nothing held to release.
            with contextlib.suppress(OSError, aiormq.exceptions.AMQPError, RuntimeError):
                await connection.close()


def _describe(error: BaseException) -> str:
    # The exception's type only: a connection error may quote the URL it was opening.
    return type(error).__name__

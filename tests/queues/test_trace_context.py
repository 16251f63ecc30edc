"""docs/reference/traces.md for queue subscribers: each publish is a producer span in the event's
trace, and its context travels with the message (a `traceparent` field of the Redis stream entry, a
`traceparent` header of the NATS message and of the AMQP message), so that a consumer's spans join
the trace. Real brokers, a real `gateway serve`, a real OTLP/HTTP receiver."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.samples import sample_body
from tests.queues.brokers import NatsServer, RabbitServer, RedisServer
from tests.queues.support import (
    SOON,
    Message,
    amqp_declare,
    amqp_messages,
    delivery_states,
    nats_add_stream,
    nats_messages,
    queue_config,
    redis_messages,
    wait_until,
)
from tests.service.harness import GatewayProcess
from tests.support import TOKEN
from tests.tracing.otlp_receiver import OtlpReceiver, ReceivedSpan

StartGateway = Callable[[str], GatewayProcess]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def start_traced_gateway(tmp_path: Path, receiver: OtlpReceiver) -> Iterator[StartGateway]:
    started: list[GatewayProcess] = []

    def start(config: str) -> GatewayProcess:
        workdir = tmp_path / f"gateway{len(started)}"
        workdir.mkdir()
        gateway = GatewayProcess(workdir, config)
        for name in [name for name in gateway.env if name.startswith("OTEL_")]:
            del gateway.env[name]
        gateway.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        gateway.env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
        started.append(gateway.start())
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
        print(f"--- gateway log ({gateway.workdir}) ---\n" + gateway.logs()[-6000:])


def post_traced(gateway: GatewayProcess) -> str:
    """One webhook carrying a caller's `traceparent`; its trace id."""
    trace_id = secrets.token_hex(16)
    body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    response = gateway.post(
        "finchpay",
        body,
        params={"token": TOKEN},
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
    )
    assert response.status_code == 200, response.text
    return trace_id


def producer_span(receiver: OtlpReceiver, trace_id: str) -> tuple[ReceivedSpan, ReceivedSpan]:
    """The (webhook span, attempt span) of the trace, once exported."""

    def both(spans: list[ReceivedSpan]) -> bool:
        kinds = {span.kind for span in spans if span.trace_id == trace_id}
        return {"server", "producer"} <= kinds

    spans = [span for span in receiver.wait_for(both, SOON) if span.trace_id == trace_id]
    (webhook,) = [span for span in spans if span.kind == "server"]
    (attempt,) = [span for span in spans if span.kind == "producer"]
    return webhook, attempt


def assert_carries_the_attempt(
    message: Message, webhook: ReceivedSpan, attempt: ReceivedSpan
) -> None:
    traceparent = message.headers["traceparent"]
    assert traceparent == f"00-{attempt.trace_id}-{attempt.span_id}-01"
    assert attempt.parent_span_id == webhook.span_id
    assert attempt.attributes["finrelay.outcome"] == "delivered"
    assert attempt.attributes["finrelay.attempt"] == 1
    assert attempt.attributes["messaging.operation.type"] == "send"


def test_a_redis_entry_carries_the_publish_spans_traceparent(
    redis_server: RedisServer, start_traced_gateway: StartGateway, receiver: OtlpReceiver
) -> None:
    stream = f"finrelay:{uuid.uuid4().hex}"
    gateway = start_traced_gateway(
        queue_config("ledger-stream", "redis", url=redis_server.url, stream=stream)
    )
    trace_id = post_traced(gateway)
    wait_until(lambda: len(redis_messages(redis_server.url, stream)) == 1, what="the entry")
    webhook, attempt = producer_span(receiver, trace_id)
    (message,) = redis_messages(redis_server.url, stream)
    assert_carries_the_attempt(message, webhook, attempt)
    assert attempt.name == f"send {stream}"
    assert attempt.attributes["messaging.system"] == "redis"
    assert attempt.attributes["messaging.destination.name"] == stream


def test_a_nats_message_carries_the_publish_spans_traceparent_header(
    nats_server: NatsServer, start_traced_gateway: StartGateway, receiver: OtlpReceiver
) -> None:
    stream, prefix = f"S{uuid.uuid4().hex[:12]}", f"t{uuid.uuid4().hex[:12]}"
    nats_add_stream(nats_server.url, stream, [f"{prefix}.>"])
    gateway = start_traced_gateway(
        queue_config("risk", "nats", url=nats_server.url, subject=prefix + ".{type}")
    )
    trace_id = post_traced(gateway)
    wait_until(
        lambda: set(delivery_states(gateway, "risk").values()) == {"delivered"},
        what="the PubAck",
    )
    webhook, attempt = producer_span(receiver, trace_id)
    (message,) = nats_messages(nats_server.url, stream)
    assert_carries_the_attempt(message, webhook, attempt)
    subject = f"{prefix}.payment.succeeded"
    assert attempt.name == f"send {subject}"
    assert attempt.attributes["messaging.system"] == "nats"
    assert attempt.attributes["messaging.destination.name"] == subject


def test_an_amqp_message_carries_the_publish_spans_traceparent_header(
    rabbit_server: RabbitServer, start_traced_gateway: StartGateway, receiver: OtlpReceiver
) -> None:
    exchange, queue = f"x{uuid.uuid4().hex[:12]}", f"q{uuid.uuid4().hex[:12]}"
    amqp_declare(rabbit_server.url, exchange, queue, binding="payment.*")
    gateway = start_traced_gateway(
        queue_config(
            "accounting", "amqp", url=rabbit_server.url, exchange=exchange, routing_key="{type}"
        )
    )
    trace_id = post_traced(gateway)
    wait_until(
        lambda: set(delivery_states(gateway, "accounting").values()) == {"delivered"},
        what="the publish confirmed",
    )
    webhook, attempt = producer_span(receiver, trace_id)
    (message,) = amqp_messages(rabbit_server.url, queue)
    assert_carries_the_attempt(message, webhook, attempt)
    # OpenTelemetry's RabbitMQ conventions: the exchange is the destination.
    assert attempt.name == f"send {exchange}"
    assert attempt.attributes["messaging.system"] == "rabbitmq"
    assert attempt.attributes["messaging.destination.name"] == exchange
    assert attempt.attributes["messaging.rabbitmq.destination.routing_key"] == "payment.succeeded"

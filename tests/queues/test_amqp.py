"""docs/reference/queues.md, RabbitMQ: a real rabbitmq-server, a real `gateway serve`, and aiormq
declaring the exchange and queue and taking the messages as a consumer would."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import httpx

from tests.delivery.subscriber import new_hmac_secret
from tests.queues.brokers import BrokerProcess, RabbitServer
from tests.queues.support import (
    CONTENT_TYPE,
    amqp_count,
    amqp_declare,
    amqp_messages,
    attempt_errors,
    attempts_metric,
    delivery_states,
    post_events,
    queue_config,
    stored_body,
    verify,
    wait_until,
)
from tests.service.harness import GatewayProcess

StartGateway = Callable[[str], GatewayProcess]


def _names() -> tuple[str, str]:
    """An exchange and a queue of one test's own, on the shared server."""
    token = uuid.uuid4().hex[:12]
    return f"finrelay-{token}", f"accounting-{token}"


def test_amqp_queue_gets_every_event_confirmed_persistent_and_signed(
    rabbit_server: RabbitServer, start_gateway: StartGateway
) -> None:
    exchange, queue = _names()
    amqp_declare(rabbit_server.url, exchange, queue, binding="payment.*")
    secret = new_hmac_secret()
    gateway = start_gateway(
        queue_config(
            "accounting",
            "amqp",
            url=rabbit_server.url,
            exchange=exchange,
            routing_key="{type}",
            secret=secret,
            max_in_flight=8,
        )
    )
    ids = post_events(gateway, 12)
    wait_until(
        lambda: (
            set(delivery_states(gateway, "accounting").values()) == {"delivered"}
            and len(delivery_states(gateway, "accounting")) == 12
        ),
        what="every delivery confirmed",
    )
    messages = amqp_messages(rabbit_server.url, queue)
    assert sorted(message.headers["webhook-id"] for message in messages) == sorted(ids)
    for message in messages:
        event_id = message.headers["webhook-id"]
        assert message.extra["message_id"] == event_id
        assert message.extra["delivery_mode"] == 2
        assert message.extra["routing_key"] == "payment.succeeded"
        assert message.extra["exchange"] == exchange
        assert message.headers["content-type"] == CONTENT_TYPE
        # AMQP header values are strings (longstr), the timestamp the attempt's.
        raw_headers = message.extra["raw_headers"]
        assert isinstance(raw_headers, dict)
        # `traceparent`: the attempt's trace context (docs/reference/traces.md), sent without an
        # endpoint.
        assert set(raw_headers) == {
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "traceparent",
        }
        assert all(isinstance(value, str | bytes) for value in raw_headers.values())
        timestamp = message.extra["timestamp"]
        assert isinstance(timestamp, datetime)
        assert int(timestamp.timestamp()) == int(message.headers["webhook-timestamp"])
        assert message.body == stored_body(gateway, event_id)
        verify(message, secret)
    assert attempts_metric(gateway, "accounting") == {"delivered": 12.0}


def test_amqp_default_exchange_routes_to_the_queue_named_by_the_routing_key(
    rabbit_server: RabbitServer, start_gateway: StartGateway
) -> None:
    _, queue = _names()
    amqp_declare(rabbit_server.url, "", queue)
    gateway = start_gateway(
        queue_config("accounting", "amqp", url=rabbit_server.url, routing_key=queue)
    )
    ids = post_events(gateway, 3)
    wait_until(lambda: amqp_count(rabbit_server.url, queue) >= 3, what="3 messages")
    messages = amqp_messages(rabbit_server.url, queue)
    assert sorted(message.headers["webhook-id"] for message in messages) == sorted(ids)
    for message in messages:
        verify(message, None)


def test_amqp_missing_exchange_is_retried_then_dead_with_a_clear_error(
    rabbit_server: RabbitServer, start_gateway: StartGateway
) -> None:
    exchange, _ = _names()
    gateway = start_gateway(
        queue_config(
            "accounting",
            "amqp",
            url=rabbit_server.url,
            exchange=exchange,
            routing_key="{type}",
            retry_schedule=[0.1, 0.1],
        )
    )
    (event_id,) = post_events(gateway, 1)
    wait_until(lambda: delivery_states(gateway, "accounting") == {event_id: "dead"}, what="dead")
    errors = attempt_errors(gateway, event_id)
    assert [outcome for outcome, _ in errors] == ["retry", "retry", "failed"]
    assert all(error == f"the exchange '{exchange}' does not exist" for _, error in errors)


def test_amqp_message_no_queue_is_bound_to_is_retried_then_dead(
    rabbit_server: RabbitServer, start_gateway: StartGateway
) -> None:
    exchange, queue = _names()
    # The queue takes transfers only: a payment is returned (basic.return), then acked.
    amqp_declare(rabbit_server.url, exchange, queue, binding="transfer.*")
    gateway = start_gateway(
        queue_config(
            "accounting",
            "amqp",
            url=rabbit_server.url,
            exchange=exchange,
            routing_key="{type}",
            retry_schedule=[0.1, 0.1],
        )
    )
    (event_id,) = post_events(gateway, 1)
    wait_until(lambda: delivery_states(gateway, "accounting") == {event_id: "dead"}, what="dead")
    errors = attempt_errors(gateway, event_id)
    assert [outcome for outcome, _ in errors] == ["retry", "retry", "failed"]
    assert all(error.startswith("unroutable: returned by RabbitMQ") for _, error in errors)
    assert amqp_count(rabbit_server.url, queue) == 0


def test_amqp_stopped_then_killed_loses_no_event(
    own_broker: Callable[..., BrokerProcess], start_gateway: StartGateway
) -> None:
    server = own_broker(RabbitServer)
    assert isinstance(server, RabbitServer)
    amqp_declare(server.url, "finrelay", "accounting")
    gateway = start_gateway(
        queue_config(
            "accounting",
            "amqp",
            url=server.url,
            exchange="finrelay",
            routing_key="{type}",
            timeout_seconds=2,
            retry_schedule=[1.0] * 20,
            circuit_breaker_failures=0,
        )
    )
    posted = post_events(gateway, 5)
    wait_until(lambda: amqp_count(server.url, "accounting") >= 5, what="the first 5")

    for stop in (server.stop, server.kill):  # orderly, then SIGKILL
        stop()
        posted += post_events(gateway, 5)
        assert httpx.get(f"{gateway.base_url}/readyz", timeout=10).status_code == 200
        server.start()  # the same node and mnesia: the durable queue and its messages are back
        wait_until(
            lambda: set(delivery_states(gateway, "accounting").values()) == {"delivered"},
            timeout=60,
            what="every event confirmed after the broker is back",
        )
    received = {m.headers["webhook-id"] for m in amqp_messages(server.url, "accounting")}
    assert received == set(posted)

"""docs/reference/queues.md, NATS JetStream: a real nats-server -js, a real `gateway serve`, and
nats-py reading the stream as a consumer would."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from tests.delivery.subscriber import new_hmac_secret
from tests.queues.brokers import BrokerProcess, NatsServer
from tests.queues.support import (
    CONTENT_TYPE,
    attempt_errors,
    attempts_metric,
    delivery_states,
    nats_add_stream,
    nats_messages,
    post_events,
    queue_config,
    stored_body,
    verify,
    wait_until,
)
from tests.service.harness import GatewayProcess

StartGateway = Callable[[str], GatewayProcess]


def _names() -> tuple[str, str]:
    """A stream and a subject prefix of one test's own, on the shared server."""
    token = uuid.uuid4().hex[:12]
    return f"FINRELAY_{token}", f"finrelay-{token}"


def test_nats_stream_gets_every_event_signed_on_its_type_subject(
    nats_server: NatsServer, start_gateway: StartGateway
) -> None:
    stream, prefix = _names()
    nats_add_stream(nats_server.url, stream, [f"{prefix}.>"])
    secret = new_hmac_secret()
    gateway = start_gateway(
        queue_config(
            "risk",
            "nats",
            url=nats_server.url,
            subject=prefix + ".{source}.{type}",
            secret=secret,
            max_in_flight=8,
        )
    )
    ids = post_events(gateway, 6) + post_events(gateway, 6, "ERROR")

    wait_until(lambda: len(nats_messages(nats_server.url, stream)) >= 12, what="12 messages")
    messages = nats_messages(nats_server.url, stream)
    assert sorted(message.headers["webhook-id"] for message in messages) == sorted(ids)
    for message in messages:
        event_id = message.headers["webhook-id"]
        # `traceparent`: the attempt's trace context (docs/reference/traces.md), sent without an
        # endpoint.
        assert set(message.headers) == {
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "content-type",
            "Nats-Msg-Id",
            "traceparent",
        }
        assert message.headers["Nats-Msg-Id"] == event_id
        assert message.headers["content-type"] == CONTENT_TYPE
        assert message.body == stored_body(gateway, event_id)
        event = verify(message, secret)
        # `{source}` is the source's name, `{type}` the canonical type, dots kept.
        assert message.extra["subject"] == f"{prefix}.finchpay.{event['type']}"
    types = {str(verify(message, secret)["type"]) for message in messages}
    assert types == {"payment.succeeded", "payment.failed"}
    wait_until(
        lambda: set(delivery_states(gateway, "risk").values()) == {"delivered"},
        what="every delivery recorded as delivered",
    )
    assert attempts_metric(gateway, "risk") == {"delivered": 12.0}


def test_nats_replay_inside_the_duplicate_window_is_acknowledged_not_stored_again(
    nats_server: NatsServer, start_gateway: StartGateway
) -> None:
    stream, prefix = _names()
    nats_add_stream(nats_server.url, stream, [f"{prefix}.>"])
    gateway = start_gateway(
        queue_config("risk", "nats", url=nats_server.url, subject=prefix + ".{type}")
    )
    (event_id,) = post_events(gateway, 1)
    wait_until(lambda: delivery_states(gateway, "risk") == {event_id: "delivered"})
    replayed = gateway.gateway_cli("replay", event_id)
    assert replayed.returncode == 0, replayed.stderr
    wait_until(
        lambda: (
            [outcome for outcome, _ in attempt_errors(gateway, event_id)]
            == ["delivered", "delivered"]
        ),
        what="the replay acknowledged (a duplicate's PubAck)",
    )
    assert len(nats_messages(nats_server.url, stream)) == 1


def test_nats_subject_no_stream_captures_is_retried_then_dead_with_a_clear_error(
    nats_server: NatsServer, start_gateway: StartGateway
) -> None:
    _, prefix = _names()
    gateway = start_gateway(
        queue_config(
            "nowhere",
            "nats",
            url=nats_server.url,
            subject=prefix + ".{type}",
            retry_schedule=[0.1, 0.1],
        )
    )
    (event_id,) = post_events(gateway, 1)
    wait_until(lambda: delivery_states(gateway, "nowhere") == {event_id: "dead"}, what="dead")
    errors = attempt_errors(gateway, event_id)
    assert [outcome for outcome, _ in errors] == ["retry", "retry", "failed"]
    expected = f"no JetStream stream captures '{prefix}.payment.succeeded'"
    assert all(error == expected for _, error in errors), errors


def test_nats_stopped_then_killed_loses_no_event(
    own_broker: Callable[..., BrokerProcess], start_gateway: StartGateway
) -> None:
    server = own_broker(NatsServer)
    assert isinstance(server, NatsServer)
    nats_add_stream(server.url, "FINRELAY", ["finrelay.>"])
    gateway = start_gateway(
        queue_config(
            "risk",
            "nats",
            url=server.url,
            subject="finrelay.{type}",
            timeout_seconds=2,
            retry_schedule=[0.5] * 20,
            circuit_breaker_failures=0,
        )
    )
    posted = post_events(gateway, 5)
    wait_until(lambda: len(nats_messages(server.url, "FINRELAY")) >= 5, what="the first 5")

    for stop in (server.stop, server.kill):  # orderly, then SIGKILL
        stop()
        posted += post_events(gateway, 5)
        assert httpx.get(f"{gateway.base_url}/readyz", timeout=10).status_code == 200
        server.start()  # the same port and store directory: the stream is still there
        expected = set(posted)
        wait_until(
            lambda: (
                {m.headers["webhook-id"] for m in nats_messages(server.url, "FINRELAY")} >= expected  # noqa: B023 - waited for here, within the loop's turn
            ),
            what="every event after the broker is back",
        )
    assert set(delivery_states(gateway, "risk").values()) == {"delivered"}
    # At least once, and Nats-Msg-Id lets the stream drop what a lost PubAck made us resend.
    ids = [m.headers["webhook-id"] for m in nats_messages(server.url, "FINRELAY")]
    assert sorted(ids) == sorted(posted)

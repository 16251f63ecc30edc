"""docs/reference/queues.md, Redis Streams: a real redis-server, a real `gateway serve`, and
redis-py reading the stream as a consumer would."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from gateway.delivery.circuit import CLOSED
from tests.delivery.subscriber import new_hmac_secret
from tests.delivery.test_circuit_breaker import (
    WORKERS,
    assert_opened_once_then_probed_after_one_pause,
    circuit_of,
    wait_for_both_workers,
)
from tests.delivery.test_delivery import post_many
from tests.queues.brokers import BrokerProcess, RedisServer
from tests.queues.support import (
    CONTENT_TYPE,
    HEADER,
    SOON,
    attempt_errors,
    attempts_metric,
    delivery_states,
    post_events,
    queue_config,
    redis_messages,
    stored_body,
    verify,
    wait_until,
)
from tests.service.harness import GatewayProcess

StartGateway = Callable[[str], GatewayProcess]


def test_redis_stream_gets_every_event_signed_with_the_contracted_fields(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    secret = new_hmac_secret()
    stream = f"finrelay:{uuid.uuid4().hex}"
    gateway = start_gateway(
        queue_config(
            "ledger-stream",
            "redis",
            url=redis_server.url,
            stream=stream,
            maxlen=1000,
            secret=secret,
            max_in_flight=8,
        )
    )
    ids = post_events(gateway, 12)

    wait_until(lambda: len(redis_messages(redis_server.url, stream)) >= 12, what="12 entries")
    messages = redis_messages(redis_server.url, stream)
    assert sorted(message.headers["webhook-id"] for message in messages) == sorted(ids)
    for message in messages:
        # `traceparent`: the attempt's trace context (docs/reference/traces.md), sent without an
        # endpoint.
        assert set(message.headers) == {
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "content-type",
            "traceparent",
        }
        assert message.headers["content-type"] == CONTENT_TYPE
        assert message.headers["webhook-timestamp"].isdigit()
        # The very bytes stored at ingest, verified as a consumer would.
        assert message.body == stored_body(gateway, message.headers["webhook-id"])
        event = verify(message, secret)
        assert event["type"] == "payment.succeeded"
    wait_until(
        lambda: set(delivery_states(gateway, "ledger-stream").values()) == {"delivered"},
        what="every delivery recorded as delivered",
    )
    assert attempts_metric(gateway, "ledger-stream") == {"delivered": 12.0}


def test_redis_without_a_secret_has_no_signature_field_and_uses_one_connection(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    stream = f"finrelay:{uuid.uuid4().hex}"
    with redis.Redis.from_url(redis_server.url) as client:
        clients_before = int(client.info("clients")["connected_clients"])
    gateway = start_gateway(
        queue_config("plain", "redis", url=redis_server.url, stream=stream, max_in_flight=32)
    )
    ids = post_events(gateway, 40)
    wait_until(lambda: len(redis_messages(redis_server.url, stream)) >= 40, what="40 entries")
    messages = redis_messages(redis_server.url, stream)
    assert sorted(message.headers["webhook-id"] for message in messages) == sorted(ids)
    for message in messages:
        verify(message, None)
    with redis.Redis.from_url(redis_server.url) as client:
        clients_after = int(client.info("clients")["connected_clients"])
    # 32 sends at a time went through one connection (pipelined), not one each.
    assert clients_after - clients_before <= 1


def test_redis_refusing_the_xadd_is_retried_then_dead(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    stream = f"finrelay:{uuid.uuid4().hex}"
    with redis.Redis.from_url(redis_server.url) as client:
        client.set(stream, "not a stream")  # XADD then answers WRONGTYPE
    gateway = start_gateway(
        queue_config(
            "wrong", "redis", url=redis_server.url, stream=stream, retry_schedule=[0.1, 0.1]
        )
    )
    (event_id,) = post_events(gateway, 1)
    wait_until(lambda: delivery_states(gateway, "wrong") == {event_id: "dead"}, what="dead")
    errors = attempt_errors(gateway, event_id)
    assert [outcome for outcome, _ in errors] == ["retry", "retry", "failed"]
    assert all("WRONGTYPE" in error for _, error in errors), errors


def test_redis_stopped_then_killed_loses_no_event_and_never_shows_its_password(
    own_broker: Callable[..., BrokerProcess], start_gateway: StartGateway
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    server = own_broker(RedisServer, password=password)
    assert isinstance(server, RedisServer)
    url = server.url
    assert password in url
    stream = "finrelay:events"
    gateway = start_gateway(
        queue_config(
            "ledger-stream",
            "redis",
            url=url,
            stream=stream,
            timeout_seconds=2,
            retry_schedule=[0.5] * 20,
            circuit_breaker_failures=0,
        )
    )
    posted = post_events(gateway, 5)
    wait_until(lambda: len(redis_messages(url, stream)) >= 5, what="the first 5")

    for stop in (server.stop, server.kill):  # orderly, then SIGKILL
        stop()
        # Ingress does not depend on the broker: 200 for every event, ready all along.
        posted += post_events(gateway, 5)
        assert httpx.get(f"{gateway.base_url}/readyz", timeout=10).status_code == 200
        server.start()
        expected = set(posted)
        wait_until(
            lambda: (
                {m.headers["webhook-id"] for m in redis_messages(url, stream)} >= expected  # noqa: B023 - waited for here, within the loop's turn
            ),
            what="every event after the broker is back",
        )
    assert set(delivery_states(gateway, "ledger-stream").values()) == {"delivered"}
    errors = {error for event_id in posted for _, error in attempt_errors(gateway, event_id)}
    assert any(error.startswith("Redis unreachable") for error in errors), errors
    metrics = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    assert password not in gateway.logs()
    assert password not in metrics
    assert not any(password in error for error in errors)


def test_redis_down_for_seconds_costs_one_circuit_pause_however_many_processes_send(
    own_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """Redis killed for 3 s while 100 events arrive at two worker processes: the circuit opens
    once, the other process's sends under way when it opened change nothing (before the probe
    was marked, one re-opened it for twice as long), and the probe after one pause finds Redis
    back (tests/delivery/test_circuit_breaker.py does the same over HTTP)."""
    down, pause = 3.0, 5.0
    server = own_broker(RedisServer)
    assert isinstance(server, RedisServer)
    stream = "finrelay:events"
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    gateway = GatewayProcess(
        workdir,
        queue_config(
            "ledger-stream",
            "redis",
            url=server.url,
            stream=stream,
            timeout_seconds=2,
            retry_schedule=[0.5] * 10,
            circuit_breaker_seconds=pause,
        ),
        serve_args=WORKERS,
    )
    try:
        gateway.start()
        wait_for_both_workers(gateway)
        server.kill()
        back_at = time.monotonic() + down
        ids = post_many(gateway, 100)
        time.sleep(max(0.0, back_at - time.monotonic()))
        server.start()
        wait_until(
            lambda: len(redis_messages(server.url, stream)) >= len(ids),
            timeout=pause + SOON,
            what="every event in the stream once Redis is back",
        )
        assert {m.headers["webhook-id"] for m in redis_messages(server.url, stream)} == set(ids)
        wait_until(
            lambda: set(delivery_states(gateway, "ledger-stream").values()) == {"delivered"},
            what="every delivery recorded as delivered",
        )
        attempts = [
            attempt
            for record in gateway.event_records(ids).values()
            for delivery in record.deliveries
            for attempt in delivery.attempts
        ]
        assert circuit_of(gateway, "ledger-stream") == CLOSED
    finally:
        gateway.stop()
    probe = min(a.started_at for a in attempts if a.outcome == "delivered")
    assert_opened_once_then_probed_after_one_pause(gateway, "ledger-stream", probe)


def test_redis_attempts_are_counted_and_logged_each_on_its_subscriber_and_outcome(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two workers (prometheus_client's multiprocess mode: one scrape adds up both), two Redis
    subscribers sent in batches: `ledger`'s stream takes every entry; `broken`'s key is not a
    stream, so each of its messages is refused (WRONGTYPE), retried once, then failed and
    dead. Each attempt counts once, on its own subscriber's and outcome's series; a series
    nothing counted is not there at all; each attempt has its own log line."""
    ledger, broken = (f"finrelay:{uuid.uuid4().hex}" for _ in range(2))
    with redis.Redis.from_url(redis_server.url) as client:
        client.set(broken, "not a stream")
    subscribers = "".join(
        f'[subscribers.{name}]\nkind = "redis"\nurl = "{redis_server.url}"\n'
        f'stream = "{stream}"\nmax_in_flight = 16\nretry_schedule = [0.2]\n'
        # A refused XADD counts towards the circuit: never opened here, so nothing waits.
        "circuit_breaker_failures = 0\n\n"
        for name, stream in (("ledger", ledger), ("broken", broken))
    )
    routes = '[[routes]]\nsubscribers = ["ledger", "broken"]\n'
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    gateway = GatewayProcess(workdir, HEADER + subscribers + routes, serve_args=WORKERS)
    try:
        gateway.start()
        wait_for_both_workers(gateway)
        ids = post_many(gateway, 60)
        wait_until(
            lambda: (
                set(delivery_states(gateway, "ledger").values()) == {"delivered"}
                and set(delivery_states(gateway, "broken").values()) == {"dead"}
                and len(delivery_states(gateway, "broken")) == len(ids)
            ),
            what="ledger's deliveries delivered, broken's dead",
        )
        text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    finally:
        gateway.stop()
    attempts, dead, latency = (
        "finrelay_delivery_attempts_total",
        "finrelay_dead_letters_total",
        "finrelay_delivered_seconds_count",
    )
    counted = {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in (attempts, dead, latency)
    }
    n = float(len(ids))
    assert counted == {
        (attempts, ("outcome", "delivered"), ("subscriber", "ledger")): n,
        (attempts, ("outcome", "retry"), ("subscriber", "broken")): n,
        (attempts, ("outcome", "failed"), ("subscriber", "broken")): n,
        (dead, ("subscriber", "broken")): n,
        (latency, ("subscriber", "ledger")): n,
    }
    lines = [json.loads(line) for line in gateway.logs().splitlines() if line.startswith("{")]

    def logged(event: str, subscriber: str) -> list[str]:
        return sorted(
            line["event_id"]
            for line in lines
            if line.get("event") == event and line.get("subscriber") == subscriber
        )

    assert logged("delivered", "ledger") == sorted(ids)
    assert logged("retry_scheduled", "broken") == sorted(ids)
    assert logged("dead_letter", "broken") == sorted(ids)
    assert logged("delivered", "broken") == logged("retry_scheduled", "ledger") == []

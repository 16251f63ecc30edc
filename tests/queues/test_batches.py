"""Batches into real brokers (gateway/delivery/transport.py `send_batch`): deliveries due
together go out as one batch (a Redis pipeline, JetStream publishes whose PubAcks are awaited
together, AMQP publishes whose confirms are), and when the broker refuses some of its messages,
each message's outcome is recorded on its own: the refused ones retried with the broker's
reason, the others delivered. A batch the broker does not answer within the subscriber's
timeout is a timeout for each of its messages.

A dispatcher in this process (tests/delivery/batching.py): the deliveries are stored before it
starts, so that its first claim takes them together."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from gateway.store.base import NewEvent
from tests.delivery.batching import (
    all_attempted,
    attempts_of,
    dispatch_until,
    new_event,
    open_store,
    subscribers_of,
)
from tests.queues.brokers import BrokerProcess, NatsServer, RabbitServer, RedisServer
from tests.queues.support import amqp_declare, amqp_messages, nats_add_stream, nats_messages

# Bodies of this size fill Redis's memory past the limit the test sets: the XADD carrying one
# is refused (OOM), the small ones before it in the same pipeline are not.
BIG = 8_000_000


Attempts = dict[str, list[tuple[str, str | None]]]


def _run(tmp_path: Path, toml: str, events: list[NewEvent]) -> Attempts:
    """Dispatch `events` (due together) until each has an attempt; each one's attempts as
    (outcome, error)."""
    subscribers = subscribers_of(tmp_path, toml)

    async def scenario() -> Attempts:
        store = await open_store(tmp_path, events)
        ids = [event.id for event in events]
        try:
            await dispatch_until(store, subscribers, all_attempted(store, ids))
            return {
                event_id: [(a.outcome, a.error) for a in await attempts_of(store, event_id)]
                for event_id in ids
            }
        finally:
            await store.close()

    return asyncio.run(scenario())


def test_redis_refusing_one_xadd_of_a_pipeline_retries_that_entry_alone(
    own_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    server = own_broker(RedisServer)
    assert isinstance(server, RedisServer)
    with redis.Redis.from_url(server.url) as client:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", used + 2_000_000)
    events = [new_event(n, "stream") for n in range(3)]
    events.append(new_event(3, "stream", body=b'{"pad":"' + b"x" * BIG + b'"}'))
    attempts = _run(
        tmp_path,
        f'[subscribers.stream]\nkind = "redis"\nurl = "{server.url}"\nstream = "s"\n'
        "max_in_flight = 8\nretry_schedule = [60]\n",
        events,
    )
    for event in events[:3]:
        assert attempts[event.id] == [("delivered", None)]
    ((outcome, error),) = attempts[events[3].id]
    assert outcome == "retry"
    assert error is not None
    assert error.startswith("Redis refused the XADD: command not allowed when used memory")
    with redis.Redis.from_url(server.url) as client:
        entries = client.xrange("s")
    assert [fields[b"webhook-id"].decode() for _, fields in entries] == [e.id for e in events[:3]]


def test_redis_not_answering_within_the_timeout_is_a_timeout_for_each_message_of_the_batch(
    own_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    server = own_broker(RedisServer)
    assert isinstance(server, RedisServer)
    events = [new_event(n, "stream") for n in range(5)]
    with redis.Redis.from_url(server.url) as client:
        client.ping()  # the transport's connection comes later: the pause holds its commands
        client.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    attempts = _run(
        tmp_path,
        f'[subscribers.stream]\nkind = "redis"\nurl = "{server.url}"\nstream = "s"\n'
        "max_in_flight = 16\ntimeout_seconds = 1\nretry_schedule = [60]\n",
        events,
    )
    assert all(attempts[event.id] == [("retry", "timeout")] for event in events), attempts


def test_nats_subject_without_a_stream_fails_its_messages_alone(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """`{type}` in the subject, and a stream capturing one type only: the other type's
    messages in the same batch find no stream; each is retried with that said."""
    token = uuid.uuid4().hex[:12]
    stream, prefix = f"FINRELAY_{token}", f"finrelay-{token}"
    nats_add_stream(nats_server.url, stream, [f"{prefix}.payment.succeeded"])
    events = [
        new_event(n, "risk", type="payment.succeeded" if n % 2 else "payment.failed")
        for n in range(6)
    ]
    attempts = _run(
        tmp_path,
        f'[subscribers.risk]\nkind = "nats"\nurl = "{nats_server.url}"\n'
        f'subject = "{prefix}.{{type}}"\nmax_in_flight = 16\nretry_schedule = [60]\n',
        events,
    )
    for event in events:
        if event.type == "payment.succeeded":
            assert attempts[event.id] == [("delivered", None)]
        else:
            subject = f"{prefix}.payment.failed"
            error = f"no JetStream stream captures {subject!r}"
            assert attempts[event.id] == [("retry", error)]
    got = {message.headers["webhook-id"] for message in nats_messages(nats_server.url, stream)}
    assert got == {event.id for event in events if event.type == "payment.succeeded"}


def test_amqp_unroutable_messages_of_a_batch_are_retried_alone(
    rabbit_server: RabbitServer, tmp_path: Path
) -> None:
    """`{type}` as the routing key, and a queue bound for one type only: RabbitMQ returns the
    other type's messages (mandatory) and acks the rest; each outcome is recorded on its own."""
    token = uuid.uuid4().hex[:12]
    exchange, queue = f"finrelay-{token}", f"finrelay-{token}-q"
    amqp_declare(rabbit_server.url, exchange, queue, binding="payment.succeeded")
    events = [
        new_event(n, "ledger", type="payment.succeeded" if n % 2 else "payment.failed")
        for n in range(6)
    ]
    attempts = _run(
        tmp_path,
        f'[subscribers.ledger]\nkind = "amqp"\nurl = "{rabbit_server.url}"\n'
        f'exchange = "{exchange}"\nrouting_key = "{{type}}"\nmax_in_flight = 16\n'
        "retry_schedule = [60]\n",
        events,
    )
    for event in events:
        if event.type == "payment.succeeded":
            assert attempts[event.id] == [("delivered", None)]
        else:
            ((outcome, error),) = attempts[event.id]
            assert outcome == "retry"
            assert error is not None
            assert error.startswith("unroutable: returned by RabbitMQ")
    got = {message.headers["webhook-id"] for message in amqp_messages(rabbit_server.url, queue)}
    assert got == {event.id for event in events if event.type == "payment.succeeded"}

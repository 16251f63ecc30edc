"""Delivery into each broker (Redis Streams, NATS JetStream, RabbitMQ), as a ratio to the
broker's own client publishing the same bytes with the same guarantees in the same run.

Per broker, a fresh server on free loopback ports in a temporary directory (the test suite's
tests/queues/brokers.py starts them), then:

  1. bound: the broker's own Python client, in this process, publishes --events canonical event
     bodies (the same bytes the gateway stores, with the same webhook-* values) with the
     guarantee the gateway waits for, --in-flight at a time on one connection:
       redis   redis-py (hiredis): XADD pipelines of --in-flight entries; an entry id each
       nats    nats-py: JetStream publish with the same headers (Nats-Msg-Id); a PubAck each
       amqp    aiormq: publisher confirms, mandatory, persistent; a basic.ack each
  2. gateway: the same number of events is written straight into a fresh SQLite store (the
     gateway's own store API, one pending delivery each), then `gateway serve` starts with one
     queue subscriber (max_in_flight = --in-flight) and drains it. Rate: messages the broker
     holds (polled every 20 ms) from the first to the last / the time between, so neither
     start-up nor ingest counts: this is delivery alone (claim, sign, publish, wait for the
     broker's acknowledgement, record the attempt in SQLite).

Ratio = gateway / bound; the aim is >= 50%. Both publish into the same server, one after the
other, with nothing else of the benchmark running meanwhile.

Per broker, also the gateway's store writes and commits per delivered event (issue 27: at most
3 writes): its /metrics read once when it has recorded every event delivered (one scrape covers
every `--workers` process), `finrelay_store_writes_total` and `finrelay_store_commits_total`
since it started over `finrelay_delivery_attempts_total{outcome="delivered"}`. The events were
stored before the gateway started, by another store object, so no accept is counted (ingest
0): every write here is one the dispatcher hands the SQLite writer (bench/_common.py
`StoreWrites`): attempt records (one write per attempt, or per batch of attempts where the
transport sends in batches), claims (one per `claim_due` call, however many deliveries it
leases), heartbeats (two writes per process per second: the heartbeat and the release of
silent owners' leases), circuit saves.

    .venv/bin/python bench/queues.py --quick     # 2,000 events per broker, about a minute
    .venv/bin/python bench/queues.py             # 10,000 events per broker
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiormq
import nats
import redis
import redis.asyncio
from pamqp.commands import Basic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.registry import ADAPTERS
from adapters.source import Secret, SourceSettings
from bench._common import (
    LIFECYCLE_CURRENCY,
    SOURCES,
    Metrics,
    StoreWrites,
    exit_on_sigterm,
    gateway_config,
    gateway_service,
    machine_line,
    new_subscriber_secret,
    provider_webhook,
)
from gateway.signing import SigningKeys
from gateway.store.base import NewEvent
from gateway.store.sqlite import SQLiteStore
from schemas.event import encode_event
from tests.queues.brokers import BrokerProcess, NatsServer, RabbitServer, RedisServer

CONTENT_TYPE = "application/cloudevents+json"
# Events stored at a time before the gateway starts: the store refuses writes beyond its bounded
# room (20,000), as it would refuse webhooks.
PREFILL_SLICE = 5_000


class Event:
    __slots__ = ("body", "id", "signature", "source", "timestamp", "type")

    def __init__(self, event_id: str, source: str, event_type: str, body: bytes) -> None:
        self.id, self.source, self.type, self.body = event_id, source, event_type, body
        self.timestamp = 0
        self.signature = ""


def make_events(count: int, secret: str) -> list[Event]:
    """`count` distinct canonical events (five adapters round robin), signed now."""
    now = datetime.now(UTC)
    keys = SigningKeys((Secret(secret),))
    settings = {
        name: SourceSettings(name=name, adapter=name, currency=LIFECYCLE_CURRENCY)
        for name in SOURCES
    }
    events = []
    for index in range(count):
        source, body, headers, _ = provider_webhook(index, now)
        canonical = ADAPTERS[source].normalize(body, headers, settings[source], now, "signature")
        event = Event(canonical.id, source, canonical.type, encode_event(canonical))
        event.timestamp = int(now.timestamp())
        signature = keys.sign(event.id, event.timestamp, event.body)
        assert signature is not None
        event.signature = signature
        events.append(event)
    return events


def webhook_headers(event: Event) -> dict[str, str]:
    return {
        "webhook-id": event.id,
        "webhook-timestamp": str(event.timestamp),
        "webhook-signature": event.signature,
    }


# The bound: each broker's own client.


async def redis_bound(url: str, events: Sequence[Event], in_flight: int) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        for start in range(0, len(events), in_flight):
            pipeline = client.pipeline(transaction=False)
            for event in events[start : start + in_flight]:
                fields = {**webhook_headers(event), "content-type": CONTENT_TYPE}
                pipeline.xadd("bound", {**fields, "body": event.body})  # type: ignore[dict-item]
            replies = await pipeline.execute()
            assert all(isinstance(reply, bytes) for reply in replies)
    finally:
        await client.aclose()


async def nats_bound(url: str, events: Sequence[Event], in_flight: int) -> None:
    client = await nats.connect(url)
    try:
        jetstream = client.jetstream()
        slots = asyncio.Semaphore(in_flight)

        async def publish(event: Event) -> None:
            headers = {
                **webhook_headers(event),
                "content-type": CONTENT_TYPE,
                "Nats-Msg-Id": event.id,
            }
            async with slots:
                await jetstream.publish(f"bound.{event.type}", event.body, headers=headers)

        await asyncio.gather(*(publish(event) for event in events))
    finally:
        await client.close()


async def amqp_bound(url: str, events: Sequence[Event], in_flight: int) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        slots = asyncio.Semaphore(in_flight)

        async def publish(event: Event) -> None:
            properties = aiormq.spec.Basic.Properties(
                content_type=CONTENT_TYPE,
                delivery_mode=2,
                message_id=event.id,
                timestamp=datetime.fromtimestamp(event.timestamp, UTC),
                headers=dict(webhook_headers(event)),
            )
            async with slots:
                confirmation = await channel.basic_publish(
                    event.body,
                    exchange="bound",
                    routing_key=event.type,
                    properties=properties,
                    mandatory=True,
                )
            assert isinstance(confirmation, Basic.Ack)

        await asyncio.gather(*(publish(event) for event in events))
    finally:
        await connection.close()


# Broker set-up and counting, with each broker's own client.


async def nats_setup(url: str) -> None:
    client = await nats.connect(url)
    try:
        manager = client.jetstream()
        await manager.add_stream(name="BOUND", subjects=["bound.>"])
        await manager.add_stream(name="GATEWAY", subjects=["gateway.>"])
    finally:
        await client.close()


async def nats_count(url: str, stream: str) -> int:
    client = await nats.connect(url)
    try:
        info = await client.jetstream().stream_info(stream)
        return int(info.state.messages)
    finally:
        await client.close()


async def amqp_setup(url: str) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for name in ("bound", "gateway"):
            await channel.exchange_declare(name, exchange_type="topic", durable=True)
            await channel.queue_declare(name, durable=True)
            await channel.queue_bind(name, name, routing_key="#")
    finally:
        await connection.close()


async def amqp_count(url: str, queue: str) -> int:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        return int((await channel.queue_declare(queue, passive=True)).message_count or 0)
    finally:
        await connection.close()


class Broker:
    def __init__(
        self,
        kind: str,
        server: type[BrokerProcess],
        subscriber: Callable[[str], str],
        bound: Callable[[str, Sequence[Event], int], object],
        count: Callable[[str], int],
        setup: Callable[[str], None] = lambda url: None,
    ) -> None:
        self.kind, self.server, self.subscriber = kind, server, subscriber
        self.bound, self.count, self.setup = bound, count, setup


def _redis_count(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.xlen("gateway"))


BROKERS = {
    "redis": Broker(
        "redis",
        RedisServer,
        lambda url: f'url = "{url}"\nstream = "gateway"',
        redis_bound,
        _redis_count,
    ),
    "nats": Broker(
        "nats",
        NatsServer,
        lambda url: f'url = "{url}"\nsubject = "gateway.{{type}}"',
        nats_bound,
        lambda url: asyncio.run(nats_count(url, "GATEWAY")),
        lambda url: asyncio.run(nats_setup(url)),
    ),
    "amqp": Broker(
        "amqp",
        RabbitServer,
        lambda url: f'url = "{url}"\nexchange = "gateway"\nrouting_key = "{{type}}"',
        amqp_bound,
        lambda url: asyncio.run(amqp_count(url, "gateway")),
        lambda url: asyncio.run(amqp_setup(url)),
    ),
}


async def prefill(database: Path, events: Sequence[Event]) -> None:
    """Every event stored with one pending delivery to "sink", due now, as ingest leaves it."""
    store = SQLiteStore(database)
    await store.open()
    try:
        received = time.time()
        for start in range(0, len(events), PREFILL_SLICE):
            await asyncio.gather(
                *(
                    store.accept(
                        NewEvent(
                            id=event.id,
                            source=event.source,
                            type=event.type,
                            received_at=received,
                            body=event.body,
                            subscribers=("sink",),
                        )
                    )
                    for event in events[start : start + PREFILL_SLICE]
                )
            )
    finally:
        await store.close()


def gateway_rate(
    broker: Broker, url: str, events: Sequence[Event], secret: str, in_flight: int, work: Path
) -> tuple[float, StoreWrites]:
    """Messages per second into the broker, and the store's writes over the whole run."""
    (work / "data").mkdir(parents=True)
    asyncio.run(prefill(work / "data" / "gateway.db", events))
    subscriber = (
        f'[subscribers.sink]\nkind = "{broker.kind}"\n{broker.subscriber(url)}\n'
        f'secret = "{secret}"\nmax_in_flight = {in_flight}\ntimeout_seconds = 30\n'
    )
    service = gateway_service(work, gateway_config(subscriber))
    service.start()
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            count = broker.count(url)
            now = time.perf_counter()
            if count and first is None:
                first = (now, count)
            if count >= len(events):
                assert first is not None
                rate = (count - first[1]) / max(now - first[0], 1e-6)
                return rate, recorded_writes(service.url, len(events))
            time.sleep(0.02)
        raise RuntimeError(f"the gateway did not deliver {len(events)} events in time")
    finally:
        service.stop()


def recorded_writes(base_url: str, delivered: int, timeout: float = 10.0) -> StoreWrites:
    """The store's writes once the gateway has recorded `delivered` deliveries (or at
    `timeout`): the broker holds a message a moment before its attempt record is committed."""
    deadline = time.monotonic() + timeout
    while True:
        writes = StoreWrites.of(Metrics.scrape(base_url))
        if writes.delivered >= delivered or time.monotonic() >= deadline:
            return writes
        time.sleep(0.1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per broker")
    parser.add_argument("--in-flight", type=int, default=64, help="publishes at a time")
    parser.add_argument("--brokers", default="redis,nats,amqp")
    parser.add_argument("--quick", action="store_true", help="2,000 events per broker")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = 2_000
    exit_on_sigterm()
    print(machine_line("queues"))
    print(f"# {args.events} events per broker, {args.in_flight} in flight, one connection each")
    secret = new_subscriber_secret()
    results = []
    with tempfile.TemporaryDirectory(prefix="finrelay-queues-") as scratch:
        for kind in args.brokers.split(","):
            broker = BROKERS[kind]
            events = make_events(args.events, secret)
            server = broker.server(Path(scratch) / kind)
            server.start()
            try:
                url = getattr(server, "url")  # noqa: B009 - every broker process has one
                broker.setup(url)
                started = time.perf_counter()
                asyncio.run(broker.bound(url, events, args.in_flight))  # type: ignore[arg-type]
                bound = len(events) / (time.perf_counter() - started)
                rate, writes = gateway_rate(
                    broker, url, events, secret, args.in_flight, Path(scratch) / f"{kind}-gw"
                )
            finally:
                server.shutdown()
            results.append(rate / bound)
            print(
                f"{kind:6} bound {bound:8.0f} events/s   gateway {rate:8.0f} events/s"
                f"   ratio {rate / bound:5.0%}   store: {writes.summary()}",
                flush=True,
            )
    print(f"# lowest ratio {min(results):.0%} (aim: 50% or more)")


if __name__ == "__main__":
    main()

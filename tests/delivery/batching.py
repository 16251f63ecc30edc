"""What the batch tests share: a dispatcher run in this process over a real SQLite store, with
the subscribers of a TOML snippet and either their real transports (a broker's) or a test's
own, until what the test waits for is on record.

In this process, not under `gateway serve`: a test decides exactly which deliveries are due
together (stored before the dispatcher starts, so its first claim takes them as one batch) and
can hand the dispatcher a transport that misbehaves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from gateway.config import SubscriberConfig
from gateway.config.loading import load_config
from gateway.delivery.dispatcher import Dispatcher
from gateway.delivery.registry import build_transport
from gateway.delivery.transport import Transport
from gateway.metrics import Metrics
from gateway.store.base import Attempt, NewEvent
from gateway.store.sqlite import SQLiteStore
from tests.support import FINCHPAY_GATEWAY

SOON = 30.0


def subscribers_of(tmp_path: Path, toml: str) -> Mapping[str, SubscriberConfig]:
    """The subscribers a `[subscribers.*]` TOML snippet describes, as `gateway serve` reads
    them."""
    path = tmp_path / "gateway.toml"
    path.write_text(FINCHPAY_GATEWAY + toml)
    return load_config(path).subscribers


def new_event(
    n: int, subscriber: str, *, type: str = "payment.succeeded", **fields: object
) -> NewEvent:
    """Event `n` for `subscriber`; `fields` as NewEvent's (a body, a subject, `ordered`)."""
    values: dict[str, object] = {
        "id": f"evt_batch{n:06d}",
        "source": "finchpay",
        "type": type,
        "received_at": time.time(),
        "body": b'{"n":%d}' % n,
        "subscribers": (subscriber,),
        **fields,
    }
    return NewEvent(**values)  # type: ignore[arg-type]


async def open_store(tmp_path: Path, events: Sequence[NewEvent]) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "data" / "gateway.db")
    await store.open()
    for event in events:
        assert await store.accept(event) == "accepted"
    return store


async def attempts_of(store: SQLiteStore, event_id: str) -> tuple[Attempt, ...]:
    record = await store.event_record(event_id)
    assert record is not None
    (delivery,) = record.deliveries
    return delivery.attempts


async def dispatch_until(
    store: SQLiteStore,
    subscribers: Mapping[str, SubscriberConfig],
    done: Callable[[], Awaitable[bool]],
    transports: Mapping[str, Transport] | None = None,
) -> Metrics:
    """Run a dispatcher (the subscribers' own transports unless `transports` says otherwise)
    until `done()`; its metrics."""
    metrics = Metrics()
    chosen = {name: build_transport(config) for name, config in subscribers.items()}
    chosen.update(transports or {})
    dispatcher = Dispatcher(store, subscribers, chosen, metrics)
    dispatcher.start()
    try:
        deadline = time.monotonic() + SOON
        while not await done():
            assert time.monotonic() < deadline, "not on record in time"
            await asyncio.sleep(0.02)
    finally:
        await dispatcher.stop()
    return metrics


def all_attempted(store: SQLiteStore, event_ids: Sequence[str]) -> Callable[[], Awaitable[bool]]:
    """Every one of `event_ids` has at least one attempt on record."""

    async def done() -> bool:
        for event_id in event_ids:
            if not await attempts_of(store, event_id):
                return False
        return True

    return done

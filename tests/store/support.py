"""What the store suite's modules share: a clock moved by hand, events, attempts, and reading a
delivery back through the interface (never the backend's tables)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import psycopg

from gateway.delivery.decide import Decision, attempt_outcome
from gateway.store.base import (
    Attempt,
    ClaimedDelivery,
    ClaimRequest,
    DeliveryState,
    NewEvent,
    Store,
)

START = 1_700_000_000.0
# How long a PostgreSQL store's listener may take to LISTEN (`listening`).
LISTEN_WAIT_SECONDS = 15.0


class Clock:
    """The store's clock, moved by hand: every judgement of "due" and "expired" is the store's,
    so a test moves this instead of sleeping."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def event_id(n: int) -> str:
    return f"evt_{n:026d}"


def event(
    n: int,
    subscribers: tuple[str, ...] = ("a",),
    *,
    at: float = START,
    source: str = "s",
    subject: str | None = None,
    ordered: tuple[str, ...] = (),
    type: str = "payment.succeeded",
    status: str | None = None,
) -> NewEvent:
    return NewEvent(
        id=event_id(n),
        source=source,
        type=type,
        received_at=at,
        body=b'{"n":%d}' % n,
        subscribers=subscribers,
        subject=subject,
        ordered=ordered,
        status=status,
    )


def number(claimed: ClaimedDelivery) -> int:
    """The `n` of the `event(n)` a claimed delivery is of."""
    return int(claimed.event_id[4:])


# A subscriber's `max_in_flight` where a test is not about it: no claim of theirs reaches it.
UNBOUNDED = 1_000_000


async def claim(
    store: Store,
    owner: str = "w",
    *,
    subscriber: str = "a",
    lease: float = 30.0,
    limit: int = 100,
    max_in_flight: int = UNBOUNDED,
) -> list[ClaimedDelivery]:
    claimed = await store.claim_due(
        ClaimRequest(
            subscriber=subscriber,
            limit=limit,
            max_in_flight=max_in_flight,
            lease_seconds=lease,
            owner=owner,
        ),
    )
    return list(claimed.deliveries)


def attempt_of(decision: Decision, claimed: ClaimedDelivery, at: float = START) -> Attempt:
    """An attempt whose outcome fits `decision`, as the dispatcher records it."""
    outcome = attempt_outcome(decision)
    return Attempt(
        delivery_id=claimed.delivery_id,
        started_at=at,
        duration=0.1,
        outcome=outcome,
        status_code=200 if outcome == "delivered" else 503,
        error=None if outcome == "delivered" else "HTTP 503",
    )


async def settle(
    store: Store, claimed: ClaimedDelivery, decision: Decision, at: float = START
) -> None:
    """Record one attempt of a delivery this test holds the lease of."""
    applied = await store.record_attempt(
        attempt_of(decision, claimed, at), decision, lease_token=claimed.lease_token
    )
    assert applied, "the lease was this test's"


async def delivery_state(
    store: Store, n: int, subscriber: str = "a"
) -> tuple[DeliveryState, int, float]:
    """A delivery as an operator sees it: its state, how many attempts it has on record, and
    when it is (or was) next due."""
    record = await store.event_record(event_id(n))
    assert record is not None, f"no event {n}"
    (delivery,) = [d for d in record.deliveries if d.subscriber == subscriber]
    return delivery.state, len(delivery.attempts), delivery.next_attempt_at


async def attempts_on_record(store: Store, numbers: Sequence[int]) -> int:
    """Attempts recorded for the deliveries of these events, all together."""
    total = 0
    for n in numbers:
        record = await store.event_record(event_id(n))
        assert record is not None, f"no event {n}"
        total += sum(len(delivery.attempts) for delivery in record.deliveries)
    return total


async def listening(url: str, count: int = 1) -> None:
    """Wait until `count` PostgreSQL stores' listeners LISTEN on the store's channel (each is a
    task of its own: a notification sent before it listens is not heard, by design)."""
    deadline = time.monotonic() + LISTEN_WAIT_SECONDS
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        while True:
            cursor = await db.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query = 'LISTEN finrelay_deliveries'"
            )
            row = await cursor.fetchone()
            if row is not None and row[0] >= count:
                return
            assert time.monotonic() < deadline, "the store's listener never listened"
            await asyncio.sleep(0.05)

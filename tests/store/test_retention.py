"""Retention in the store, on every backend: old delivered events go with their deliveries and
attempts, events with a pending or dead delivery stay, quarantined payloads as the README says;
in bounded batches, each saying where the next starts (`scanned_to`). (`[store]
retention_days` is the config's: tests/config/test_retention.py.)"""

from __future__ import annotations

import asyncio

import pytest

from gateway import retention
from gateway.delivery.decide import Dead, Decision, Delivered
from gateway.store.base import ClaimRequest, NewEvent, Purged, Store
from tests.store.conftest import OpenStore, Run
from tests.store.support import Clock, attempt_of

OLD, CUTOFF, NEW = 1_000.0, 2_000.0, 5_000.0


def new_event(name: str, received_at: float, subscribers: tuple[str, ...]) -> NewEvent:
    return NewEvent(
        id=f"evt_{name}",
        source="s",
        type="payment.succeeded",
        received_at=received_at,
        body=b'{"name":"%s"}' % name.encode(),
        subscribers=subscribers,
    )


async def settle(store: Store, subscriber: str, decision: Decision) -> None:
    """Claim the subscriber's due deliveries and record one attempt each with `decision`."""
    claim = await store.claim_due(
        ClaimRequest(
            subscriber=subscriber, limit=100, max_in_flight=100, lease_seconds=30, owner="test"
        )
    )
    for claimed in claim.deliveries:
        attempt = attempt_of(decision, claimed, NEW)
        assert await store.record_attempt(attempt, decision, lease_token=claimed.lease_token)


async def old_and_new(store: Store) -> None:
    """Five old events (one delivered, one with no delivery, one pending, one dead, one half
    delivered), a new delivered one, and three quarantined payloads: an old and a new one
    waiting, and a new one released."""
    for event in (
        new_event("old_delivered", OLD, ("ok",)),
        new_event("old_unrouted", OLD + 1, ()),
        new_event("old_pending", OLD + 2, ("down",)),
        new_event("old_dead", OLD + 3, ("refuses",)),
        new_event("old_half_delivered", OLD + 4, ("ok", "down")),
        new_event("new_delivered", NEW, ("ok",)),
    ):
        assert await store.accept(event) == "accepted"
    await settle(store, "ok", Delivered())
    await settle(store, "refuses", Dead())
    quarantine = {
        received_at: await store.quarantine(
            source="s",
            received_at=received_at,
            body=b"{",
            headers={},
            verification="signature",
            error="not JSON",
        )
        for received_at in (OLD, NEW, NEW + 1)
    }
    # Reprocessed: its event is stored now, the raw copy is of no more use.
    await store.release_quarantined(quarantine[NEW + 1], [new_event("released", NEW + 1, ())])


def test_old_delivered_events_go_and_pending_and_dead_ones_stay(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store(Clock(NEW + 10))
        await old_and_new(store)
        before = await store.stats()

        deleted = await retention.purge_expired(store, before=CUTOFF, batch_size=2, pause=0)
        assert deleted == (2, 2)

        kept = {
            "old_pending": 0,
            "old_dead": 1,
            "old_half_delivered": 1,
            "new_delivered": 1,
            "released": 0,
        }
        for name in ("old_delivered", "old_unrouted"):
            assert await store.event_record(f"evt_{name}") is None
        for name, attempts in kept.items():
            record = await store.event_record(f"evt_{name}")
            assert record is not None, name
            # Attempts of the events that stay stay with them.
            assert sum(len(d.attempts) for d in record.deliveries) == attempts, name
        # The deliveries of the deleted events went with them, and nothing else did: one
        # delivered delivery less (old_delivered's).
        after = await store.stats()
        assert after["events"] == before["events"] - 2 == 5
        assert (after["delivered"], after["pending"], after["dead"]) == (
            before["delivered"] - 1,
            before["pending"],
            before["dead"],
        )
        # The old payload waiting in quarantine and the released one went; the new one stays.
        assert [p.received_at for p in await store.quarantined()] == [NEW]

    run(scenario())


def test_each_batch_looks_at_no_more_than_its_limit_and_says_where_the_next_starts(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> list[Purged]:
        store = await open_test_store(Clock(NEW + 10))
        await old_and_new(store)
        batches = []
        after = 0.0
        for _ in range(10):
            purged = await store.purge_expired(before=CUTOFF, after=after, limit=2)
            batches.append(purged)
            if purged.scanned_to is None:
                break
            after = purged.scanned_to
        return batches

    batches = run(scenario())
    # The two oldest go; the next two stay (pending, dead) and are passed over; the last old
    # one stays too, and nothing older than the cutoff is left to look at.
    assert batches == [
        Purged(events=2, quarantined=2, scanned_to=OLD + 1),
        Purged(events=0, quarantined=0, scanned_to=OLD + 3),
        Purged(events=0, quarantined=0, scanned_to=None),
    ]


def test_the_background_task_purges_soon_after_start(open_test_store: OpenStore, run: Run) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        await store.accept(new_event("ten_seconds_old", 990.0, ()))
        await store.accept(new_event("just_now", 999.5, ()))
        # retention_days as a fraction: 5 seconds.
        task = asyncio.create_task(
            retention.purge_periodically(
                store, 5 / 86_400, clock=lambda: 1_000.0, first=0, every=0.05
            )
        )
        try:
            for _ in range(100):
                if (await store.stats())["events"] == 1:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await store.event_record("evt_ten_seconds_old") is None
        assert await store.event_record("evt_just_now") is not None

    run(scenario())

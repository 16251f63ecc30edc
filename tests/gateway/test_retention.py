"""Retention on a real SQLite store: old delivered events go with their deliveries and attempts,
events with a pending or dead delivery stay, quarantine rows as the README says; in bounded
batches; and `[store] retention_days` in the config."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway import retention
from gateway.config import ConfigError, load_config
from gateway.delivery.decide import Dead, Decision, Delivered
from gateway.store.base import Attempt, NewEvent, Purged
from gateway.store.sqlite import SQLiteStore

OLD, CUTOFF, NEW = 1_000.0, 2_000.0, 5_000.0
SOURCE = '[sources.x]\nadapter = "finchpay"\ntoken = "t0123456789abcdef"\n'


class CountingStore(SQLiteStore):
    """The real store, noting what each retention batch did."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, clock=lambda: NEW + 10)
        self.batches: list[tuple[int, Purged]] = []

    async def purge_expired(self, *, before: float, after: float, limit: int) -> Purged:
        purged = await super().purge_expired(before=before, after=after, limit=limit)
        self.batches.append((limit, purged))
        return purged


def new_event(name: str, received_at: float, subscribers: tuple[str, ...]) -> NewEvent:
    return NewEvent(
        id=f"evt_{name}",
        source="s",
        type="payment.succeeded",
        received_at=received_at,
        body=b'{"name":"%s"}' % name.encode(),
        subscribers=subscribers,
    )


async def settle(store: SQLiteStore, subscriber: str, decision: Decision) -> None:
    """Claim the subscriber's due deliveries and record one attempt each with `decision`."""
    for claimed in await store.claim_due(
        subscriber=subscriber, limit=100, lease_seconds=30, owner="test"
    ):
        attempt = Attempt(
            delivery_id=claimed.delivery_id,
            started_at=NEW,
            duration=0.01,
            outcome="delivered" if isinstance(decision, Delivered) else "failed",
            status_code=200 if isinstance(decision, Delivered) else 400,
        )
        assert await store.record_attempt(attempt, decision, lease_token=claimed.lease_token)


def table_ids(database: Path, query: str) -> set[str]:
    with sqlite3.connect(database) as db:
        return {str(row[0]) for row in db.execute(query)}


def test_old_delivered_events_go_and_pending_and_dead_ones_stay(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    store = CountingStore(database)

    async def scenario() -> None:
        await store.open()
        try:
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
            await store.release_quarantined(quarantine[NEW + 1], new_event("released", NEW + 1, ()))

            deleted = await retention.purge_expired(store, before=CUTOFF, batch_size=2, pause=0)
            assert deleted == (2, 2)
        finally:
            await store.close()

    asyncio.run(scenario())
    assert table_ids(database, "SELECT id FROM events") == {
        "evt_old_pending",
        "evt_old_dead",
        "evt_old_half_delivered",
        "evt_new_delivered",
        "evt_released",
    }
    # Deliveries and attempts of the deleted events went with them, and nothing else did.
    assert table_ids(database, "SELECT DISTINCT event_id FROM deliveries") == {
        "evt_old_pending",
        "evt_old_dead",
        "evt_old_half_delivered",
        "evt_new_delivered",
    }
    assert table_ids(
        database,
        "SELECT DISTINCT d.event_id FROM attempts a JOIN deliveries d ON d.id = a.delivery_id",
    ) == {"evt_old_dead", "evt_old_half_delivered", "evt_new_delivered"}
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 3
        # The old payload waiting in quarantine and the released one went; the new one stays.
        kept = db.execute("SELECT received_at, released_as FROM quarantine").fetchall()
    assert kept == [(NEW, None)]
    # Batches of at most 2 events each: the 5 old events took 3 transactions.
    assert [limit for limit, _ in store.batches] == [2, 2, 2]
    assert all(purged.events <= 2 for _, purged in store.batches)


def test_the_purge_uses_its_indexes(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"

    async def scenario() -> None:
        store = SQLiteStore(database)
        await store.open()
        await store.close()

    asyncio.run(scenario())
    with sqlite3.connect(database) as db:
        plan = " ".join(
            str(row[3])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT e.id FROM events e INDEXED BY events_received"
                " WHERE e.received_at > 0 AND e.received_at < 1 AND NOT EXISTS (SELECT 1"
                " FROM deliveries d WHERE d.event_id = e.id AND d.state <> 'delivered')"
                " ORDER BY e.received_at LIMIT 500"
            )
        )
    assert "SCAN" not in plan, plan


def test_the_background_task_purges_soon_after_start(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"

    async def scenario() -> None:
        store = SQLiteStore(database)
        await store.open()
        try:
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
        finally:
            await store.close()

    asyncio.run(scenario())
    assert table_ids(database, "SELECT id FROM events") == {"evt_just_now"}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("", 30.0), ("retention_days = 7", 7.0), ("retention_days = 0.25", 0.25)],
)
def test_retention_days_is_read_from_the_store_section(
    tmp_path: Path, setting: str, expected: float
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[store]\n{setting}\n{SOURCE}")
    assert load_config(path).store.retention_days == expected


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", '"30"', "true", "100000"])
def test_retention_days_must_be_a_positive_number_of_days(tmp_path: Path, value: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[store]\nretention_days = {value}\n{SOURCE}")
    with pytest.raises(ConfigError, match=r"store\.retention_days"):
        load_config(path)

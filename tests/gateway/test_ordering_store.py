"""Ordered delivery per subject (CONTRACT.md 4b) in the store, on a real SQLite file: which
deliveries are held, what releases them, where a redriven or replayed one goes, and that the
claim and the release look up indexes rather than scanning deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.delivery.decide import Dead, Decision, Delivered, RetryAt, attempt_outcome
from gateway.store.base import Attempt, ClaimedDelivery, NewEvent
from gateway.store.sqlite import SQLiteStore

START = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TracedStore(SQLiteStore):
    """The real store, keeping every statement its connections run (for EXPLAIN)."""

    statements: list[str]

    def _connect(self) -> sqlite3.Connection:
        connection = super()._connect()
        connection.set_trace_callback(self.statements.append)
        return connection


def event(
    n: int,
    subject: str | None,
    *,
    source: str = "s",
    subscribers: tuple[str, ...] = ("a", "b"),
    ordered: tuple[str, ...] = ("a",),
) -> NewEvent:
    return NewEvent(
        id=f"evt_{n:026d}",
        source=source,
        type="payment.succeeded",
        received_at=START,
        body=b'{"n":%d}' % n,
        subscribers=subscribers,
        subject=subject,
        ordered=ordered,
    )


@contextlib.asynccontextmanager
async def opened(path: Path, clock: Clock) -> AsyncIterator[TracedStore]:
    store = TracedStore(path, clock=clock)
    store.statements = []
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def claim(store: SQLiteStore, subscriber: str = "a") -> dict[str, ClaimedDelivery]:
    """What a worker claims now, by event number."""
    claimed = await store.claim_due(subscriber=subscriber, limit=100, lease_seconds=30, owner="w")
    return {str(int(delivery.event_id[4:])): delivery for delivery in claimed}


async def settle(store: SQLiteStore, delivery: ClaimedDelivery, decision: Decision) -> None:
    attempt = Attempt(
        delivery_id=delivery.delivery_id,
        started_at=START,
        duration=0.1,
        outcome=attempt_outcome(decision),
    )
    assert await store.record_attempt(attempt, decision, lease_token=delivery.lease_token)


def test_only_the_first_pending_delivery_of_a_subject_is_claimable(tmp_path: Path) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            # Accepted together: one group commit, in this order.
            await asyncio.gather(
                *(
                    store.accept(e)
                    for e in (
                        event(1, "pay_1"),
                        event(2, "pay_1"),
                        event(3, "pay_2"),
                        event(4, None),  # no subject: never held
                        event(5, None),
                        event(6, "pay_1", source="t"),  # another source's pay_1
                        event(7, "pay_1", ordered=()),  # to nobody ordered
                    )
                )
            )
            await store.accept(event(8, "pay_1"))  # a later commit
            assert sorted(await claim(store)) == ["1", "3", "4", "5", "6", "7"]
            # The unordered subscriber gets everything at once.
            assert sorted(await claim(store, "b")) == [str(n) for n in range(1, 9)]
            backlog = await store.delivery_backlog()
            assert (backlog["a"].count, backlog["a"].held) == (8, 2)
            assert (backlog["b"].count, backlog["b"].held) == (8, 0)
            assert (await store.stats())["held"] == 2

    asyncio.run(scenario())


def test_delivered_or_dead_releases_the_next_at_once_and_a_retry_holds_it(tmp_path: Path) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            for n in (1, 2, 3):
                await store.accept(event(n, "pay_1"))
            first = (await claim(store))["1"]
            clock.now += 1
            await settle(store, first, RetryAt(at=clock.now + 60))
            clock.now += 61  # the retry is due; its successors still wait
            first = (await claim(store))["1"]
            await settle(store, first, Delivered())
            released = await claim(store)
            assert list(released) == ["2"]
            assert released["2"].due_at == clock.now  # due when released, not when stored
            clock.now += 1
            await settle(store, released["2"], Dead())  # a dead letter releases the next
            assert list(await claim(store)) == ["3"]
            assert (await store.delivery_backlog())["a"].held == 0

    asyncio.run(scenario())


def test_a_redriven_dead_letter_keeps_its_place_ahead_of_later_held_ones(tmp_path: Path) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            for n in (1, 2, 3):
                await store.accept(event(n, "pay_1"))
            await settle(store, (await claim(store))["1"], Dead())
            second = (await claim(store))["2"]  # released by the dead letter, in flight
            assert await store.redrive(now=clock.now, subscriber="a") == 1
            assert await claim(store) == {}  # 1 waits behind 2, which is under way
            await settle(store, second, Delivered())
            first = await claim(store)
            assert list(first) == ["1"]  # before 3: commit order
            await settle(store, first["1"], Delivered())
            assert list(await claim(store)) == ["3"]

    asyncio.run(scenario())


def test_several_dead_letters_of_a_subject_are_redriven_one_at_a_time(tmp_path: Path) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            for n in (1, 2):
                await store.accept(event(n, "pay_1"))
            await settle(store, (await claim(store))["1"], Dead())
            await settle(store, (await claim(store))["2"], Dead())
            assert await store.redrive(now=clock.now) == 2
            first = await claim(store)
            assert list(first) == ["1"]
            await settle(store, first["1"], Delivered())
            assert list(await claim(store)) == ["2"]

    asyncio.run(scenario())


def test_a_replay_keeps_its_event_s_place_and_a_new_delivery_joins_the_back(
    tmp_path: Path,
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            for n in (1, 2, 3):
                await store.accept(event(n, "pay_1", subscribers=("a",)))
            await settle(store, (await claim(store))["1"], Delivered())
            second = (await claim(store))["2"]
            # Event 1 again to `a`, which delivered it: held behind 2 (under way), and before
            # 3, as it was committed before 3.
            assert await store.replay(event(1, None).id, ["a"], now=clock.now, ordered=["a"])
            assert await claim(store) == {}
            await settle(store, second, Delivered())
            replayed = await claim(store)
            assert list(replayed) == ["1"]
            await settle(store, replayed["1"], Delivered())
            assert list(await claim(store)) == ["3"]

            # A delivery the event never had is a new one: behind every delivery of its
            # subject stored before, though the event itself was committed before them.
            await store.accept(event(6, "pay_2", subscribers=("b",), ordered=()))
            for n in (7, 8):
                await store.accept(event(n, "pay_2", subscribers=("c",), ordered=("c",)))
            assert await store.replay(event(6, None).id, ["c"], now=clock.now, ordered=["c"])
            order = []
            for _ in range(5):
                claimed = await claim(store, "c")
                assert len(claimed) <= 1
                for number, delivery in claimed.items():
                    order.append(number)
                    await settle(store, delivery, Delivered())
            assert order == ["7", "8", "6"]

    asyncio.run(scenario())


def test_the_claim_and_the_release_search_indexes_never_scan_deliveries(tmp_path: Path) -> None:
    clock = Clock(START + 1)
    path = tmp_path / "gateway.db"

    async def scenario() -> list[str]:
        async with opened(path, clock) as store:
            # A long backlog of held deliveries behind a few subjects.
            await asyncio.gather(*(store.accept(event(n, f"pay_{n % 3}")) for n in range(300)))
            store.statements.clear()
            claimed = await claim(store)
            assert len(claimed) == 3
            for delivery in claimed.values():
                await settle(store, delivery, Delivered())
            await store.accept(event(1000, "pay_1"))
            assert len(await claim(store)) == 3
            return [
                statement
                for statement in store.statements
                if "deliveries" in statement
                and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH"))
            ]

    statements = asyncio.run(scenario())
    assert any("state = 'held'" in statement for statement in statements)
    with contextlib.closing(sqlite3.connect(path)) as db:
        for statement in statements:
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement)]
            scans = [step for step in plan if step.startswith("SCAN") and "VALUES" not in step]
            scans = [step for step in scans if "deliveries" in step or step in ("SCAN d", "SCAN p")]
            assert scans == [], (statement, plan)


def test_a_version_2_database_is_upgraded_and_its_pending_deliveries_are_never_held(
    tmp_path: Path,
) -> None:
    """A database from before ordered delivery: its events have no subject recorded, so their
    deliveries are not held, and nothing is held behind them."""
    path = tmp_path / "gateway.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE events (id TEXT PRIMARY KEY, source TEXT NOT NULL, type TEXT NOT NULL,"
            " received_at REAL NOT NULL, body BLOB NOT NULL);"
            "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL"
            " REFERENCES events(id), subscriber TEXT NOT NULL, state TEXT NOT NULL DEFAULT"
            " 'pending', attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,"
            " next_attempt_at REAL NOT NULL, lease_until REAL, lease_owner TEXT,"
            " lease_token INTEGER NOT NULL DEFAULT 0, last_error TEXT, finished_at REAL,"
            " UNIQUE (event_id, subscriber));"
            f"INSERT INTO events VALUES ('{event(1, None).id}', 's', 'payment.succeeded',"
            f" {START}, X'7B7D');"
            f"INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at)"
            f" VALUES ('{event(1, None).id}', 'a', {START}, {START});"
            "PRAGMA user_version=2;"
        )
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(path, clock) as store:
            await store.accept(event(2, "pay_1"))
            await store.accept(event(3, "pay_1"))
            assert sorted(await claim(store)) == ["1", "2"]

    asyncio.run(scenario())


def test_the_rule_holds_across_two_stores_on_one_database(tmp_path: Path) -> None:
    """Two gateway processes (here two stores, each with its own writer) share the database:
    what one stores is held behind what the other stored, and a release by one is claimable by
    the other at once."""
    clock = Clock(START + 1)
    path = tmp_path / "gateway.db"

    async def scenario() -> None:
        async with opened(path, clock) as first, opened(path, clock) as second:
            await first.accept(event(1, "pay_1"))
            await second.accept(event(2, "pay_1"))
            await first.accept(event(3, "pay_1"))
            assert list(await claim(second)) == ["1"]
            assert await claim(first) == {}
            # The first delivery's lease ran out (its worker died): the other store claims it
            # again, records it delivered, and the next is claimable from either store.
            clock.now += 31
            (retaken,) = (await claim(first)).values()
            await settle(first, retaken, Delivered())
            assert list(await claim(second)) == ["2"]

    asyncio.run(scenario())

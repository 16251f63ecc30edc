"""What is SQLite's own, and so tested on SQLite only: upgrading a database an older gateway
made (SQLite's schema moves by `PRAGMA user_version`; PostgreSQL's migrations are its own
module's), refusing one newer than this gateway, its query plans (that claims, releases, the
purge and operator searches seek indexes: EXPLAIN QUERY PLAN is SQLite's), a file where a
directory stands, and another process reading the file while the store writes (POSIX locks on
one file). What every backend promises is in the other modules of tests/store/."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.delivery.decide import Delivered
from gateway.store.base import ClaimRequest, EventFilter, StoreSchemaError, StoreUnavailable
from gateway.store.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.store.support import START, Clock, claim, event, event_id, number, settle


class TracedStore(SQLiteStore):
    """The real store, keeping every statement its connections run (for EXPLAIN)."""

    statements: list[str]

    def _connect(self) -> sqlite3.Connection:
        connection = super()._connect()
        connection.set_trace_callback(self.statements.append)
        return connection


@contextlib.asynccontextmanager
async def opened(path: Path, clock: Clock | None = None) -> AsyncIterator[TracedStore]:
    store = TracedStore(path, clock=clock or Clock())
    store.statements = []
    await store.open()
    try:
        yield store
    finally:
        await store.close()


# Upgrading a database an older gateway made, and refusing a newer one.


def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL,"
            " subscriber TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
            " attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,"
            " next_attempt_at REAL NOT NULL, lease_until REAL, lease_owner TEXT,"
            " last_error TEXT, finished_at REAL, UNIQUE (event_id, subscriber));"
            "CREATE TABLE subscriber_circuits (subscriber TEXT PRIMARY KEY, state BLOB NOT NULL,"
            " updated_at REAL NOT NULL);"
            "INSERT INTO subscriber_circuits VALUES ('a', X'7B7D', 1.0);"
            "PRAGMA user_version=1;"
        )

    async def scenario() -> None:
        async with opened(path, Clock(START + 1)) as store:
            assert await store.subscriber_circuits() == {"a": (1, b"{}")}
            await store.accept(event(1))
            (claimed,) = await claim(store)
            assert claimed.lease_token == 1

    asyncio.run(scenario())


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
            f"INSERT INTO events VALUES ('{event_id(1)}', 's', 'payment.succeeded',"
            f" {START}, X'7B7D');"
            f"INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at)"
            f" VALUES ('{event_id(1)}', 'a', {START}, {START});"
            "PRAGMA user_version=2;"
        )

    async def scenario() -> None:
        async with opened(path, Clock(START + 1)) as store:
            await store.accept(event(2, subject="pay_1", ordered=("a",)))
            await store.accept(event(3, subject="pay_1", ordered=("a",)))
            assert sorted(number(c) for c in await claim(store)) == [1, 2]

    asyncio.run(scenario())


def test_a_schema_3_database_gets_status_pauses_and_the_subject_index(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE events (id TEXT PRIMARY KEY, source TEXT NOT NULL, type TEXT NOT NULL,"
            " received_at REAL NOT NULL, body BLOB NOT NULL, subject TEXT);"
            f"INSERT INTO events VALUES ('evt_old', 's', 'payment.failed', {START}, X'7B7D',"
            " 'pay_old');"
            "PRAGMA user_version=3;"
        )

    async def scenario() -> None:
        async with opened(path) as store:
            await store.accept(
                event(1, at=START + 1, subject="pay_1", type="payment.failed", status="failed")
            )
            everything = await store.search_events(EventFilter(), after=None, limit=10)
            assert [row.id for row in everything] == [event_id(1), "evt_old"]
            # The old event's data.status was never recorded: a status filter passes it over.
            failed = await store.search_events(EventFilter(status="failed"), after=None, limit=10)
            assert [row.id for row in failed] == [event_id(1)]
            by_subject = EventFilter(subject="pay_old")
            assert [r.id for r in await store.search_events(by_subject, after=None, limit=10)] == [
                "evt_old"
            ]
            await store.set_paused("a", True)
            assert await store.paused_subscribers() == {"a"}

    asyncio.run(scenario())
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM events INDEXED BY events_subject"
            " WHERE subject = 'x' ORDER BY received_at DESC LIMIT 5"
        ).fetchall()
        assert "events_subject" in str(plan)


def test_a_schema_4_database_gets_the_live_lease_index(tmp_path: Path) -> None:
    """Version 5 only adds `deliveries_leased` (claims count live leases by it): a version 4
    database is this one without it."""
    path = tmp_path / "gateway.db"

    async def create() -> None:
        async with opened(path) as store:
            await store.accept(event(1))

    asyncio.run(create())
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript("DROP INDEX deliveries_leased; PRAGMA user_version=4;")

    async def scenario() -> None:
        async with opened(path, Clock(START + 1)) as store:
            claimed = await store.claim_due(
                ClaimRequest(subscriber="a", limit=10, max_in_flight=1, lease_seconds=30, owner="w")
            )
            assert [number(d) for d in claimed.deliveries] == [1]

    asyncio.run(scenario())
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "deliveries_leased" in indexes


def test_a_database_newer_than_this_gateway_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")

    async def scenario() -> None:
        store = SQLiteStore(path)
        try:
            with pytest.raises(StoreSchemaError, match=f"schema version {SCHEMA_VERSION + 1}"):
                await store.open()
        finally:
            await store.close()

    asyncio.run(scenario())
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_an_unopenable_database_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "gateway.db").mkdir()  # a directory where the file should be

    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "gateway.db")
        with pytest.raises(StoreUnavailable):
            await store.open()

    asyncio.run(scenario())


# Query plans: what SQLite does with the statements, seeks rather than scans.


def test_the_claim_and_the_release_search_indexes_never_scan_deliveries(tmp_path: Path) -> None:
    clock = Clock(START + 1)
    path = tmp_path / "gateway.db"

    async def scenario() -> list[str]:
        async with opened(path, clock) as store:
            # A long backlog of held deliveries behind a few subjects.
            await asyncio.gather(
                *(
                    store.accept(event(n, ("a", "b"), subject=f"pay_{n % 3}", ordered=("a",)))
                    for n in range(300)
                )
            )
            store.statements.clear()
            claimed = await claim(store)
            assert len(claimed) == 3
            for delivery in claimed:
                await settle(store, delivery, Delivered())
            await store.accept(event(1000, ("a", "b"), subject="pay_1", ordered=("a",)))
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


def test_a_claim_counts_live_leases_over_the_leased_rows_only(tmp_path: Path) -> None:
    """However long the backlog, counting a subscriber's live leases (for `max_in_flight`) is
    a range of `deliveries_leased`: its leased rows, whose lease runs out after now."""
    clock = Clock(START + 1)
    path = tmp_path / "gateway.db"

    async def scenario() -> list[str]:
        async with opened(path, clock) as store:
            await asyncio.gather(*(store.accept(event(n)) for n in range(300)))
            store.statements.clear()
            assert len(await claim(store, limit=3, max_in_flight=5)) == 3
            return [s for s in store.statements if s.lstrip().upper().startswith("SELECT COUNT")]

    (count,) = asyncio.run(scenario())
    with contextlib.closing(sqlite3.connect(path)) as db:
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + count)]
    assert plan == [
        "SEARCH deliveries USING INDEX deliveries_leased (subscriber=? AND lease_until>?)"
    ]


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


# Another process reading the file (an operator's sqlite3, the CLI, another worker).


def test_another_process_sees_every_commit_after_the_store_opened_its_reader(
    tmp_path: Path,
) -> None:
    """Opening a second descriptor of the database and closing it drops this process's POSIX
    locks, SQLite's included; another process's connection then deletes the WAL from under the
    store, and later commits are invisible to everyone else. The store must never do that."""
    path = tmp_path / "gateway.db"

    def count_elsewhere() -> int:
        script = (
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
            " print(db.execute('SELECT COUNT(*) FROM events').fetchone()[0]); db.close()"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return int(done.stdout)

    async def scenario() -> list[int]:
        async with opened(path) as store:
            await store.accept(event(1))
            await store.stats()  # the reader connection opens
            seen = [count_elsewhere()]
            await store.accept(event(2))
            seen.append(count_elsewhere())
            return seen

    assert asyncio.run(scenario()) == [1, 2]

"""A replayed or redriven delivery keeps the trace its operation started (docs/reference/traces.md),
on every backend: the claim hands it back with the delivery, a delivery the event's ingest made has
none (its attempts continue the event's own trace), and a later replay without a trace clears it.
Both schemas gain it by a migration that keeps what was stored (SQLite's version 5, PostgreSQL's
version 2)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import psycopg
import pytest

from gateway.delivery.decide import Dead, Delivered
from gateway.store.postgres import schema as postgres_schema
from gateway.store.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.store.conftest import OpenStore, Run
from tests.store.support import START, Clock, claim, event, event_id, settle

REPLAY = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
REDRIVE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_delivery_ingest_made_has_no_trace_of_its_own(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store(Clock(START + 1))
        await store.accept(event(1))
        (claimed,) = await claim(store)
        assert (claimed.traceparent, claimed.tracestate) == (None, None)

    run(scenario())


def test_a_replayed_delivery_is_claimed_with_the_replays_trace(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        cli = await open_test_store(clock)
        node = await open_test_store(clock)
        await cli.accept(event(1, ("a", "b")))
        (first,) = await claim(node)
        await settle(node, first, Delivered())
        # "a" was delivered (a new row state), "b" never had a delivery: both get the trace.
        assert (
            await cli.replay(
                event_id(1), ["a", "c"], now=clock.now, traceparent=REPLAY, tracestate="k=v"
            )
            == 2
        )
        for subscriber in ("a", "c"):
            (again,) = await claim(node, subscriber=subscriber)
            assert (again.traceparent, again.tracestate) == (REPLAY, "k=v")
        # The delivery the replay did not touch keeps none.
        (untouched,) = await claim(node, subscriber="b")
        assert untouched.traceparent is None

    run(scenario())


def test_a_replay_without_a_trace_clears_an_earlier_ones(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1))
        await store.replay(event_id(1), ["a"], now=clock.now, traceparent=REPLAY)
        await store.replay(event_id(1), ["a"], now=clock.now)
        (claimed,) = await claim(store)
        assert claimed.traceparent is None

    run(scenario())


def test_redriven_deliveries_share_the_redrives_trace(open_test_store: OpenStore, run: Run) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1, ("a", "b")))
        await store.accept(event(2, ("a",)))
        for subscriber in ("a", "b"):
            for claimed in await claim(store, subscriber=subscriber):
                await settle(store, claimed, Dead())
        assert await store.redrive(now=clock.now, subscriber="a", traceparent=REDRIVE) == 2
        again = await claim(store, subscriber="a")
        assert [(c.event_id, c.traceparent, c.tracestate) for c in again] == [
            (event_id(1), REDRIVE, None),
            (event_id(2), REDRIVE, None),
        ]
        # Redriven later without a trace: none again.
        assert await store.redrive(now=clock.now, subscriber="b") == 1
        (plain,) = await claim(store, subscriber="b")
        assert plain.traceparent is None

    run(scenario())


# Migrations that keep what was stored.


def test_a_schema_5_sqlite_database_gets_the_trace_columns_and_keeps_its_deliveries(
    tmp_path: Path,
) -> None:
    """Version 6 only adds deliveries' `traceparent` and `tracestate`: a version 5 database is
    this one without them."""
    path = tmp_path / "gateway.db"

    async def create() -> None:
        store = SQLiteStore(path, clock=Clock(START))
        await store.open()
        try:
            await store.accept(event(1))
            await store.accept(event(2))
        finally:
            await store.close()

    asyncio.run(create())
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            "ALTER TABLE deliveries DROP COLUMN traceparent;"
            "ALTER TABLE deliveries DROP COLUMN tracestate;"
            "PRAGMA user_version=5;"
        )

    async def scenario() -> None:
        store = SQLiteStore(path, clock=Clock(START + 1))
        await store.open()
        try:
            claimed = await claim(store)
            assert [(c.event_id, c.traceparent) for c in claimed] == [
                (event_id(1), None),
                (event_id(2), None),
            ]
            await settle(store, claimed[0], Delivered())
            await store.replay(event_id(1), ["a"], now=START + 1, traceparent=REPLAY)
            (again,) = await claim(store)
            assert (again.event_id, again.traceparent) == (event_id(1), REPLAY)
        finally:
            await store.close()

    asyncio.run(scenario())
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (2,)


def test_a_version_2_postgres_database_gets_the_trace_columns_and_keeps_its_deliveries(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.store.postgres import PostgresStore

    async def scenario() -> None:
        with monkeypatch.context() as older:
            older.setattr(postgres_schema, "MIGRATIONS", postgres_schema.MIGRATIONS[:2])
            older.setattr(postgres_schema, "SCHEMA_VERSION", 2)
            async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db:
                assert await postgres_schema.migrate(db) == (0, 2)
                await db.execute(
                    "INSERT INTO events (id, source, type, received_at, body)"
                    " VALUES (%s, 's', 'payment.succeeded', %s, '{}')",
                    (event_id(1), START),
                )
                await db.execute(
                    "INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at)"
                    " VALUES (%s, 'a', %s, %s)",
                    (event_id(1), START, START),
                )
        assert await PostgresStore(postgres_url).migrate() == (2, postgres_schema.SCHEMA_VERSION)
        store = PostgresStore(postgres_url, clock=Clock(START + 1))
        await store.open()
        try:
            (old,) = await claim(store)
            assert (old.event_id, old.traceparent) == (event_id(1), None)
            await settle(store, old, Delivered())
            await store.replay(event_id(1), ["a"], now=START + 1, traceparent=REPLAY)
            (again,) = await claim(store)
            assert again.traceparent == REPLAY
        finally:
            await store.close()

    asyncio.run(scenario())

"""The PostgreSQL store's writer thread on a real PostgreSQL (tests/postgres_server.py): its own
connection lost in the middle of a batch (that batch's callers hear StoreUnavailable, the next
write reconnects), lost while idle (replaced before the next batch, which fails nothing), and
close while writes wait for a lock (every one of them written, nothing lost). The writer on its
own: tests/store/test_group_commit.py; the promises of every backend: tests/store/test_ingest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from gateway.store.base import StoreUnavailable
from gateway.store.postgres import PostgresStore
from gateway.store.postgres import connection as postgres_connection
from tests.store.support import event

# Every wait is bounded: a store that hangs fails the test.
WAIT_SECONDS = 15.0
# The writer's batch of events alone, as pg_stat_activity shows its statement.
WRITER_STATEMENT = "WITH inserted AS (INSERT INTO events%"


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(url)
    await store.open()
    try:
        yield store
    finally:
        await asyncio.wait_for(store.close(), 30)


@contextlib.asynccontextmanager
async def holding_events(url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    """Another session keeps every insert into events waiting while this is entered (SHARE
    conflicts with the ROW EXCLUSIVE lock an INSERT takes)."""
    other = await psycopg.AsyncConnection.connect(url)
    async with other, other.transaction():
        await other.execute("LOCK TABLE events IN SHARE MODE")
        yield other


async def writer_backend(url: str, *, waiting: bool) -> int:
    """The pid of the writer's session: waiting for a lock in its batch, or idle after one."""
    deadline = time.monotonic() + WAIT_SECONDS
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        while True:
            cursor = await db.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE %s AND (wait_event_type = 'Lock') = %s",
                (WRITER_STATEMENT, waiting),
            )
            row = await cursor.fetchone()
            if row is not None:
                return int(str(row[0]))
            assert time.monotonic() < deadline, "the writer's session never showed"
            await asyncio.sleep(0.05)


async def terminate(url: str, pid: int) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        await db.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_the_writers_connection_lost_mid_batch_fails_that_batch_and_the_next_reconnects(
    postgres_url: str,
) -> None:
    async def scenario() -> None:
        async with opened(postgres_url) as store:
            assert await store.accept(event(1)) == "accepted"
            async with holding_events(postgres_url):
                lost = asyncio.ensure_future(store.accept(event(2)))
                pid = await writer_backend(postgres_url, waiting=True)
                await terminate(postgres_url, pid)
                with pytest.raises(StoreUnavailable):
                    await asyncio.wait_for(lost, WAIT_SECONDS)
            # The store is not left unavailable: the writer connects again for the next batch.
            assert await asyncio.wait_for(store.accept(event(3)), WAIT_SECONDS) == "accepted"
            await store.ping()
            # Nothing of the lost batch was committed: its caller may send it again.
            assert await store.event_record(event(2).id) is None
            assert await store.accept(event(2)) == "accepted"
            assert (await store.stats())["events"] == 3

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_the_writers_connection_lost_while_idle_is_replaced_without_failing_a_write(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL restarted (here: the session ended) while the writer had nothing to do: the
    connection is checked before the next batch and replaced, instead of failing it."""
    monkeypatch.setattr(postgres_connection, "CHECK_AFTER_IDLE_SECONDS", 0.0)

    async def scenario() -> None:
        async with opened(postgres_url) as store:
            # For nobody: no wake-up after it, the batch's statement is the session's last.
            assert await store.accept(event(1, ())) == "accepted"
            await terminate(postgres_url, await writer_backend(postgres_url, waiting=False))
            await asyncio.sleep(0.1)
            assert await asyncio.wait_for(store.accept(event(2)), WAIT_SECONDS) == "accepted"

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_close_while_writes_wait_writes_every_one_of_them(postgres_url: str) -> None:
    async def scenario() -> None:
        store = PostgresStore(postgres_url)
        await store.open()
        async with holding_events(postgres_url):
            waiting = [asyncio.ensure_future(store.accept(event(0)))]
            await writer_backend(postgres_url, waiting=True)  # the first batch waits
            waiting += [asyncio.ensure_future(store.accept(event(n))) for n in range(1, 20)]
            await asyncio.sleep(0)
            closing = asyncio.ensure_future(store.close())
            started = time.monotonic()
            for _ in range(5):
                await asyncio.sleep(0.01)
            assert time.monotonic() - started < 1.0, "close blocked the event loop"
            assert not closing.done()
            with pytest.raises(StoreUnavailable):
                await store.accept(event(99))
        await asyncio.wait_for(closing, WAIT_SECONDS)
        assert await asyncio.gather(*waiting) == ["accepted"] * 20
        async with opened(postgres_url) as again:
            assert (await again.stats())["events"] == 20
            assert await again.event_record(event(99).id) is None

    asyncio.run(asyncio.wait_for(scenario(), 120))

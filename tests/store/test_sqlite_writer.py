"""The SQLite store's writer thread: nothing a batch raises strands its callers or stops it, a
writer that cannot go on makes the store unavailable, and ingest cannot fill the room the
dispatcher's writes need.

SQLite only: the writer thread, its two rooms and the writers' flock on
`<database>-writer.lock` are how this backend does group commit; the promises they keep for
every backend (batch sizes, a watcher's or a batch's failure, StoreUnavailable) are in
tests/store/test_ingest.py."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import sqlite as sqlite_module
from gateway.store.base import NewEvent, StoreUnavailable
from gateway.store.sqlite import SQLiteStore

# Every wait on the store is bounded: before these fixes the callers waited forever.
ANSWER_SECONDS = 10.0


def event(n: int, subscribers: tuple[str, ...] = ("a",)) -> NewEvent:
    return NewEvent(
        id=f"evt_{n:026d}",
        source="s",
        type="payment.succeeded",
        received_at=time.time(),
        body=b'{"n":%d}' % n,
        subscribers=subscribers,
    )


@contextlib.asynccontextmanager
async def opened(path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(path)
    await store.open()
    try:
        yield store
    finally:
        await asyncio.wait_for(store.close(), ANSWER_SECONDS)


def test_a_job_raising_fails_only_itself(tmp_path: Path) -> None:
    def failing_job(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO quarantine (source, received_at, body, headers, verification,"
            " error) VALUES ('s', 1, x'00', '{}', 'none', 'e')"
        )
        raise KeyError("a bug in a job")

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db") as store:
            results = await asyncio.wait_for(
                asyncio.gather(
                    store._write(failing_job),
                    store.accept(event(1)),
                    return_exceptions=True,
                ),
                ANSWER_SECONDS,
            )
            assert isinstance(results[0], KeyError)
            assert results[1] == "accepted"
            stats = await store.stats()
            assert stats["events"] == 1
            assert stats["quarantined"] == 0  # the job's own write was undone

    asyncio.run(scenario())


def test_a_writer_that_cannot_go_on_makes_the_store_unavailable(tmp_path: Path) -> None:
    def close_the_connection(db: sqlite3.Connection) -> None:
        # What a lost database file or a broken connection looks like from the writer: no
        # statement, not even a rollback, works any more.
        db.close()

    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "gateway.db")
        await store.open()
        try:
            await store.ping()
            # Any error will do, as long as the caller gets an answer.
            with pytest.raises(Exception):  # noqa: B017, PT011
                await asyncio.wait_for(store._write(close_the_connection), ANSWER_SECONDS)
            # /readyz and ingress hear it at once, instead of waiting forever.
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.ping(), ANSWER_SECONDS)
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.accept(event(1)), ANSWER_SECONDS)
        finally:
            await asyncio.wait_for(store.close(), ANSWER_SECONDS)

    asyncio.run(scenario())


def test_ingest_filling_its_room_does_not_refuse_the_dispatchers_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "MAX_PENDING_WRITES", 5)
    database = tmp_path / "gateway.db"

    async def scenario() -> None:
        async with opened(database) as store:
            assert await store.accept(event(0)) == "accepted"
            # Another process holds the writers' lock: nothing commits, writes pile up.
            holder = os.open(f"{database}-writer.lock", os.O_RDWR)
            fcntl.flock(holder, fcntl.LOCK_EX)
            try:
                first = asyncio.ensure_future(store.accept(event(1)))
                await asyncio.sleep(0.2)  # the writer took it and waits for the lock
                piled = [asyncio.ensure_future(store.accept(event(n))) for n in range(2, 7)]
                await asyncio.sleep(0)
                with pytest.raises(StoreUnavailable, match="too many writes"):
                    await store.accept(event(99))
                # The ingest room is full; a delivery write still gets in.
                released = asyncio.ensure_future(store.release_leases("some-dispatcher"))
                await asyncio.sleep(0.1)
                assert not released.done()  # queued behind the lock, not refused
            finally:
                fcntl.flock(holder, fcntl.LOCK_UN)
                os.close(holder)
            await asyncio.wait_for(released, ANSWER_SECONDS)
            outcomes = await asyncio.wait_for(asyncio.gather(first, *piled), ANSWER_SECONDS)
            assert outcomes == ["accepted"] * 6

    asyncio.run(scenario())


def test_close_does_not_block_the_event_loop_with_the_ingest_room_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "MAX_PENDING_WRITES", 5)
    database = tmp_path / "gateway.db"

    async def scenario() -> None:
        store = SQLiteStore(database)
        await store.open()
        holder = os.open(f"{database}-writer.lock", os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)
        # Let the writers go in 2 s whatever happens: a close that blocked the loop would
        # otherwise wait for a lock this loop can no longer let go.
        letting_go = threading.Timer(2.0, fcntl.flock, (holder, fcntl.LOCK_UN))
        letting_go.start()
        try:
            writes = [asyncio.ensure_future(store.accept(event(0)))]
            await asyncio.sleep(0.1)  # the writer took it and waits for the lock
            writes += [asyncio.ensure_future(store.accept(event(n))) for n in range(1, 6)]
            await asyncio.sleep(0)  # five more fill the ingest room
            closing = asyncio.ensure_future(store.close())
            started = time.monotonic()
            for _ in range(5):
                await asyncio.sleep(0.01)
            assert time.monotonic() - started < 1.0, "close blocked the event loop"
            assert not closing.done()
            with pytest.raises(StoreUnavailable):
                await store.accept(event(999))
            await asyncio.wait_for(closing, ANSWER_SECONDS)
        finally:
            letting_go.join()
            os.close(holder)
        # What was waiting when close began was written, not dropped.
        assert await asyncio.gather(*writes) == ["accepted"] * 6

    asyncio.run(scenario())


def test_a_stuck_writer_makes_the_store_unavailable_until_it_moves_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "WRITER_STALL_SECONDS", 0.3)
    database = tmp_path / "gateway.db"

    async def scenario() -> None:
        async with opened(database) as store:
            await store.ping()
            holder = os.open(f"{database}-writer.lock", os.O_RDWR)
            fcntl.flock(holder, fcntl.LOCK_EX)  # another process's writer, stuck
            try:
                first = asyncio.ensure_future(store.accept(event(1)))
                await asyncio.sleep(0.1)  # the writer took it and waits for the lock
                second = asyncio.ensure_future(store.accept(event(2)))
                await asyncio.sleep(0.5)
                with pytest.raises(StoreUnavailable, match="taken no write"):
                    await store.ping()
            finally:
                fcntl.flock(holder, fcntl.LOCK_UN)
                os.close(holder)
            assert await asyncio.wait_for(asyncio.gather(first, second), ANSWER_SECONDS) == [
                "accepted",
                "accepted",
            ]
            await store.ping()

    asyncio.run(scenario())

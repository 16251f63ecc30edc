"""PostgreSQL's group commit (gateway/store/group_commit.py) on its own, with a fake `apply`: a
writer thread with an event loop of its own that answers its callers on theirs, a full ingest
room refused at once while the dispatcher's writes still get in, close applying what waits
without blocking the callers' loop, webhooks arriving within the gap after a commit sharing the
next one, and a writer thread that dies making every caller, waiting or to come, hear
StoreUnavailable. (What the PostgreSQL store does with it, on a real database:
tests/store/test_postgres_writer.py.)"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from gateway.store.base import StoreUnavailable
from gateway.store.group_commit import GroupCommit, Rooms

# Every wait is bounded: a writer that strands its callers fails the test, never hangs it.
ANSWER_SECONDS = 10.0


class Fatal(BaseException):
    """What no batch's `except Exception` catches: the writer thread itself stops."""


class Database:
    """A fake `apply`: records each batch and the thread it ran on, answers each write with
    itself doubled, and commits only while `open_` is set (a database holding its locks)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.open_ = threading.Event()
        self.open_.set()
        self.raise_next: BaseException | None = None
        self.finished = False

    async def apply(self, writes: Sequence[int]) -> Sequence[object]:
        self.threads.add(threading.current_thread().name)
        asyncio.get_running_loop()  # on a loop of the writer thread's own
        await asyncio.to_thread(self.open_.wait)
        if self.raise_next is not None:
            error, self.raise_next = self.raise_next, None
            raise error
        self.batches.append(list(writes))
        return [write * 2 for write in writes]

    async def finish(self) -> None:
        self.finished = True


def writer(
    database: Database, *, ingest_limit: int = 100, commit_gap: float = 0.0
) -> GroupCommit[int]:
    return GroupCommit(
        database.apply,
        ingest_limit=ingest_limit,
        max_batch=1_000,
        on_commit=lambda writes: None,
        abandon_waiting=lambda error: False,
        finish=database.finish,
        name="test-writer",
        commit_gap=commit_gap,
    )


def test_writes_are_applied_in_the_writer_thread_and_answered_on_the_callers_loop() -> None:
    database = Database()

    async def scenario() -> None:
        group = writer(database)
        group.start()
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*(group.submit(n, ingest=True) for n in range(50))),
                ANSWER_SECONDS,
            )
            assert answers == [n * 2 for n in range(50)]
        finally:
            await asyncio.wait_for(group.close(), ANSWER_SECONDS)

    asyncio.run(scenario())
    assert database.threads == {"test-writer"}
    assert sorted(n for batch in database.batches for n in batch) == list(range(50))
    assert len(database.batches) < 50, "writes waiting together share a batch"
    assert database.finished


def test_a_full_ingest_room_is_refused_at_once_and_the_dispatchers_writes_still_get_in() -> None:
    database = Database()

    async def scenario() -> None:
        group = writer(database, ingest_limit=3)
        group.start()
        try:
            database.open_.clear()  # the database holds every commit
            first = asyncio.ensure_future(group.submit(0, ingest=True))
            await asyncio.sleep(0.2)  # the writer took it and waits for the database
            piled = [asyncio.ensure_future(group.submit(n, ingest=True)) for n in (1, 2, 3)]
            await asyncio.sleep(0)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="too many writes waiting"):
                await group.submit(99, ingest=True)
            assert time.monotonic() - started < 0.5, "refused at once, not after a wait"
            record = asyncio.ensure_future(group.submit(7, ingest=False))
            await asyncio.sleep(0.1)
            assert not record.done()  # queued behind the held batch, not refused
            database.open_.set()
            answers = await asyncio.wait_for(asyncio.gather(first, *piled, record), ANSWER_SECONDS)
            assert answers == [0, 2, 4, 6, 14]
            assert group.running
        finally:
            database.open_.set()
            await asyncio.wait_for(group.close(), ANSWER_SECONDS)

    asyncio.run(scenario())
    assert 99 not in [n for batch in database.batches for n in batch]


def test_close_applies_what_waits_without_blocking_the_callers_loop() -> None:
    database = Database()

    async def scenario() -> None:
        group = writer(database)
        group.start()
        database.open_.clear()
        try:
            waiting = [asyncio.ensure_future(group.submit(0, ingest=True))]
            await asyncio.sleep(0.1)  # the writer took it and waits for the database
            waiting += [
                asyncio.ensure_future(group.submit(n, ingest=n % 2 == 0)) for n in range(1, 6)
            ]
            await asyncio.sleep(0)
            closing = asyncio.ensure_future(group.close())
            started = time.monotonic()
            for _ in range(5):
                await asyncio.sleep(0.01)
            assert time.monotonic() - started < 1.0, "close blocked the event loop"
            assert not closing.done()
            with pytest.raises(StoreUnavailable, match="closed"):
                await group.submit(99, ingest=True)
        finally:
            database.open_.set()  # never a test left hanging on a held database
        await asyncio.wait_for(closing, ANSWER_SECONDS)
        # Everything that waited when close began was applied and answered: nothing lost.
        assert await asyncio.gather(*waiting) == [n * 2 for n in range(6)]
        assert not group.running

    asyncio.run(scenario())
    assert database.finished


def test_a_failing_batch_answers_its_callers_and_the_writer_goes_on() -> None:
    database = Database()

    async def scenario() -> None:
        group = writer(database)
        group.start()
        try:
            database.raise_next = StoreUnavailable("PostgreSQL x:5432/db: connection lost")
            with pytest.raises(StoreUnavailable, match="connection lost"):
                await asyncio.wait_for(group.submit(1, ingest=True), ANSWER_SECONDS)
            database.raise_next = KeyError("a bug in a batch")
            with pytest.raises(StoreUnavailable, match="KeyError"):
                await asyncio.wait_for(group.submit(2, ingest=True), ANSWER_SECONDS)
            assert await asyncio.wait_for(group.submit(3, ingest=True), ANSWER_SECONDS) == 6
            assert group.running
            assert group.failure is None
        finally:
            await asyncio.wait_for(group.close(), ANSWER_SECONDS)

    asyncio.run(scenario())


def test_a_writer_thread_that_dies_makes_every_caller_hear_it() -> None:
    database = Database()

    async def scenario() -> None:
        group = writer(database)
        group.start()
        try:
            database.open_.clear()
            dying = asyncio.ensure_future(group.submit(1, ingest=True))
            await asyncio.sleep(0.1)  # the writer took it and waits for the database
            behind = asyncio.ensure_future(group.submit(2, ingest=False))
            await asyncio.sleep(0)
            database.raise_next = Fatal()
            database.open_.set()
            for caller in (dying, behind):
                with pytest.raises(StoreUnavailable, match="writer stopped"):
                    await asyncio.wait_for(caller, ANSWER_SECONDS)
            assert not group.running
            assert group.failure is not None
            assert "Fatal" in group.failure
            # Whoever comes next hears it at once, instead of waiting for ever.
            with pytest.raises(StoreUnavailable, match="writer stopped"):
                await asyncio.wait_for(group.submit(3, ingest=True), ANSWER_SECONDS)
        finally:
            await asyncio.wait_for(group.close(), ANSWER_SECONDS)

    asyncio.run(scenario())
    assert database.finished  # its connection closed all the same


def test_a_writer_never_started_is_unavailable() -> None:
    async def scenario() -> None:
        with pytest.raises(StoreUnavailable, match="not open"):
            await writer(Database()).submit(1, ingest=True)

    asyncio.run(scenario())


def test_ingest_writes_gather_until_the_gap_and_the_dispatchers_go_at_once() -> None:
    # SQLite's writer takes its batches this way: webhooks arriving together share a commit,
    # while a delivery batch's records and next claim (the other room) do not wait for company.
    rooms: Rooms[str] = Rooms(100, batch_limit=100, full="full")
    rooms.put("record", ingest=False)
    started = time.monotonic()
    assert rooms.take(100, not_before=started + 5.0) == ["record"]
    assert time.monotonic() - started < 1.0, "a dispatcher's write waited for the gap"

    rooms.put("webhook 1", ingest=True)
    late = threading.Timer(0.2, rooms.put, ("webhook 2",), {"ingest": True})
    late.start()
    started = time.monotonic()
    taken = rooms.take(100, not_before=started + 1.0)
    late.join()
    assert taken == ["webhook 1", "webhook 2"], "an ingest write did not wait for the gap"
    assert time.monotonic() - started >= 0.9


def test_webhooks_arriving_within_the_gap_after_a_commit_share_the_next_one() -> None:
    # As SQLite's writer: a webhook that finds the writer idle commits at once; after a commit,
    # webhooks gather until the gap since it has passed, so a trickle shares one commit (on
    # PostgreSQL, one transaction and one WAL flush); the dispatcher's writes alone go at once.
    database = Database()
    group = writer(database, commit_gap=1.0)

    async def scenario() -> None:
        group.start()
        try:
            started = time.monotonic()
            assert await asyncio.wait_for(group.submit(1, ingest=True), ANSWER_SECONDS) == 2
            assert time.monotonic() - started < 0.9, "a webhook to an idle writer waited"
            first = asyncio.ensure_future(group.submit(2, ingest=True))
            await asyncio.sleep(0.2)
            second = asyncio.ensure_future(group.submit(3, ingest=True))
            answers = await asyncio.wait_for(asyncio.gather(first, second), ANSWER_SECONDS)
            assert answers == [4, 6]
            started = time.monotonic()
            assert await asyncio.wait_for(group.submit(4, ingest=False), ANSWER_SECONDS) == 8
            assert time.monotonic() - started < 0.9, "a dispatcher's write waited for the gap"
        finally:
            await group.close()

    asyncio.run(scenario())
    assert database.batches == [[1], [2, 3], [4]]

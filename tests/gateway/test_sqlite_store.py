"""The SQLite store on a real file: group commit, duplicates, leases, attempts, quarantine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store.base import Attempt, NewEvent, StoreUnavailable
from gateway.store.sqlite import SQLiteStore


def event(n: int, subscribers: tuple[str, ...] = ("a", "b")) -> NewEvent:
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
        await store.close()


def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    batches: list[int] = []  # writes per commit, as the store reports each commit

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db") as store:
            store.watch_commits(batches.append)
            outcomes = await asyncio.gather(*(store.accept(event(n)) for n in range(200)))
            assert outcomes == ["accepted"] * 200

    asyncio.run(scenario())
    commits, writes = len(batches), sum(batches)
    assert writes == 200
    # 200 writes waiting together go out in a handful of transactions, one fsync each.
    assert commits <= 20, f"200 concurrent writes took {commits} commits"


def test_concurrent_copies_of_one_event_store_it_once(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        async with opened(tmp_path / "gateway.db") as store:
            return list(await asyncio.gather(*(store.accept(event(7)) for _ in range(50))))

    outcomes = asyncio.run(scenario())
    assert outcomes.count("accepted") == 1
    assert outcomes.count("duplicate") == 49


def test_a_lease_keeps_a_delivery_from_a_second_worker(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db") as store:
            await store.accept(event(1, ("a",)))
            now = time.time() + 1
            first = await store.claim_due(
                now=now, limit=10, lease_seconds=30, owner="w1", subscriber="a"
            )
            second = await store.claim_due(
                now=now, limit=10, lease_seconds=30, owner="w2", subscriber="a"
            )
            assert len(first) == 1
            assert second == []
            # The first worker dies: once its lease runs out, another worker gets it.
            later = await store.claim_due(
                now=now + 31, limit=10, lease_seconds=30, owner="w2", subscriber="a"
            )
            assert [d.delivery_id for d in later] == [first[0].delivery_id]

    asyncio.run(scenario())


def test_released_leases_are_due_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db") as store:
            await store.accept(event(1, ("a",)))
            now = time.time() + 1
            await store.claim_due(now=now, limit=1, lease_seconds=30, owner="w1", subscriber="a")
            assert await store.lease_owners() == ["w1"]
            await store.release_leases("w1")
            assert await store.lease_owners() == []
            again = await store.claim_due(
                now=now, limit=1, lease_seconds=30, owner="w2", subscriber="a"
            )
            assert len(again) == 1
            assert await store.lease_owners() == ["w2"]

    asyncio.run(scenario())


def test_attempts_move_a_delivery_through_its_states(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db") as store:
            await store.accept(event(1, ("a",)))
            now = time.time() + 1
            (claimed,) = await store.claim_due(
                now=now, limit=1, lease_seconds=30, owner="w", subscriber="a"
            )
            retry = Attempt(
                delivery_id=claimed.delivery_id,
                started_at=now,
                duration=0.1,
                outcome="retry",
                status_code=503,
                error="HTTP 503",
            )
            await store.record_attempt(retry, next_attempt_at=now + 100)
            assert await store.next_due_at(subscribers=["a"]) == pytest.approx(now + 100)
            assert await store.next_due_at(subscribers=["b"]) is None
            assert (
                await store.claim_due(
                    now=now + 1, limit=1, lease_seconds=30, owner="w", subscriber="a"
                )
                == []
            )
            (again,) = await store.claim_due(
                now=now + 100, limit=1, lease_seconds=30, owner="w", subscriber="a"
            )
            assert again.attempts == 1
            failed = Attempt(
                delivery_id=again.delivery_id,
                started_at=now + 100,
                duration=0.1,
                outcome="failed",
                status_code=400,
                error="HTTP 400",
            )
            await store.record_attempt(failed, dead=True)
            (dead,) = await store.dead_letters()
            assert (dead.event_id, dead.subscriber, dead.attempts) == (claimed.event_id, "a", 2)
            assert dead.last_error == "HTTP 400"
            assert (await store.stats())["dead"] == 1

    asyncio.run(scenario())


def test_quarantine_keeps_the_raw_body_until_released(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db") as store:
            quarantine_id = await store.quarantine(
                source="s",
                received_at=1.0,
                body=b"\xff not json",
                headers={"x": "y"},
                verification="token",
                error="bad",
            )
            (payload,) = await store.quarantined()
            assert payload.body == b"\xff not json"
            assert payload.headers == {"x": "y"}
            assert await store.release_quarantined(quarantine_id, event(3)) == "accepted"
            assert await store.quarantined() == []

    asyncio.run(scenario())


def test_a_closed_store_is_unavailable(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "gateway.db")
        with pytest.raises(StoreUnavailable):
            await store.accept(event(1))

    asyncio.run(scenario())


def test_an_unopenable_database_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "gateway.db").mkdir()  # a directory where the file should be

    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "gateway.db")
        with pytest.raises(StoreUnavailable):
            await store.open()

    asyncio.run(scenario())


def test_two_stores_on_one_database_accept_each_event_once(tmp_path: Path) -> None:
    """Two gateway workers' stores: one writer at a time (the writer lock), and a copy of an
    event racing the original through the other store is still a duplicate."""

    async def scenario() -> tuple[list[str], list[str]]:
        async with (
            opened(tmp_path / "gateway.db") as first,
            opened(tmp_path / "gateway.db") as second,
        ):
            both = await asyncio.gather(
                asyncio.gather(*(first.accept(event(n)) for n in range(300))),
                asyncio.gather(*(second.accept(event(n)) for n in range(150, 450))),
            )
            return list(both[0]), list(both[1])

    from_first, from_second = asyncio.run(scenario())
    outcomes = {
        n: [*([from_first[n]] if n < 300 else []), *([from_second[n - 150]] if n >= 150 else [])]
        for n in range(450)
    }
    for n, seen in outcomes.items():
        assert sorted(seen) == (["accepted", "duplicate"] if 150 <= n < 300 else ["accepted"])

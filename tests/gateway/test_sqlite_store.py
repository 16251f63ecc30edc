"""The SQLite store on a real file: group commit, duplicates, leases, attempts, quarantine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store.base import NewEvent, StoreUnavailable
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

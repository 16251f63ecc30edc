"""The store's operator queries on their own: a database from before them (schema 3) upgraded in
place, and the keyset pages of dead letters that share a dead_at."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from gateway.store.base import EventFilter, NewEvent
from gateway.store.sqlite import SQLiteStore

START = 1_800_000_000.0


def new_event(number: int, status: str | None) -> NewEvent:
    return NewEvent(
        id=f"evt_{number}",
        source="s",
        type="payment.failed" if status == "failed" else "payment.succeeded",
        received_at=START + number,
        body=b'{"time":null}',
        subscribers=("a",),
        subject=f"pay_{number}",
        status=status,
    )


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
        store = SQLiteStore(path)
        await store.open()
        try:
            await store.accept(new_event(1, "failed"))
            everything = await store.search_events(EventFilter(), after=None, limit=10)
            assert [row.id for row in everything] == ["evt_1", "evt_old"]
            # The old event's data.status was never recorded: a status filter passes it over.
            failed = await store.search_events(EventFilter(status="failed"), after=None, limit=10)
            assert [row.id for row in failed] == ["evt_1"]
            by_subject = EventFilter(subject="pay_old")
            assert [r.id for r in await store.search_events(by_subject, after=None, limit=10)] == [
                "evt_old"
            ]
            await store.set_paused("a", True)
            assert await store.paused_subscribers() == {"a"}
        finally:
            await store.close()

    asyncio.run(scenario())
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM events INDEXED BY events_subject"
            " WHERE subject = 'x' ORDER BY received_at DESC LIMIT 5"
        ).fetchall()
        assert "events_subject" in str(plan)


def test_dead_letter_pages_split_letters_that_died_at_the_same_moment(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        store = SQLiteStore(tmp_path / "gateway.db")
        await store.open()
        try:
            for number in range(7):
                await store.accept(new_event(number, None))
        finally:
            await store.close()
        with contextlib.closing(sqlite3.connect(tmp_path / "gateway.db")) as db, db:
            db.execute("UPDATE deliveries SET state = 'dead', finished_at = ?", (START,))
        store = SQLiteStore(tmp_path / "gateway.db")
        await store.open()
        try:
            seen: list[str] = []
            after = None
            for _ in range(10):
                page = await store.dead_letter_page(subscriber=None, after=after, limit=3)
                seen += [letter.event_id for letter in page]
                if len(page) < 3:
                    break
                after = (page[-1].dead_at, page[-1].delivery_id)
            return seen
        finally:
            await store.close()

    seen = asyncio.run(scenario())
    assert seen == [f"evt_{number}" for number in reversed(range(7))]

"""Operators' and metrics' reads on SQLite, on the reader connection (WAL: never in the writer's
way). Pages walk a keyset, never an OFFSET."""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.store import rows as as_struct
from gateway.store.base import (
    Backlog,
    DeadLetter,
    DeliveryState,
    EventFilter,
    EventRecord,
    EventRow,
)
from gateway.store.sqlite.statements import chunks

__all__ = [
    "dead_counts",
    "dead_letter_page",
    "delivery_backlog",
    "event_record",
    "event_subscribers",
    "search_events",
    "stats",
]


def event_subscribers(db: sqlite3.Connection, event_id: str) -> list[str]:
    rows = db.execute(
        "SELECT subscriber FROM deliveries WHERE event_id = ? ORDER BY id", (event_id,)
    ).fetchall()
    return [row[0] for row in rows]


def delivery_backlog(db: sqlite3.Connection) -> dict[str, Backlog]:
    pending = {
        row[0]: (int(row[1]), float(row[2]))
        for row in db.execute(
            "SELECT subscriber, COUNT(*), MIN(created_at) FROM deliveries"
            " WHERE state = 'pending' GROUP BY subscriber"
        )
    }
    held = {
        row[0]: (int(row[1]), float(row[2]))
        for row in db.execute(
            "SELECT subscriber, COUNT(*), MIN(created_at) FROM deliveries"
            " INDEXED BY deliveries_held WHERE state = 'held' GROUP BY subscriber"
        )
    }
    backlog = {}
    for name in pending.keys() | held.keys():
        count, oldest = pending.get(name, (0, float("inf")))
        held_count, held_oldest = held.get(name, (0, float("inf")))
        backlog[name] = Backlog(
            count=count + held_count,
            held=held_count,
            oldest_created_at=min(oldest, held_oldest),
        )
    return backlog


def search_events(
    db: sqlite3.Connection, filters: EventFilter, *, after: tuple[float, str] | None, limit: int
) -> list[EventRow]:
    conditions: list[str] = []
    values: list[Any] = []
    for condition, value in (
        ("source = ?", filters.source),
        ("type GLOB ?", filters.type_glob),
        ("subject = ?", filters.subject),
        ("status = ?", filters.status),
        ("received_at >= ?", filters.since),
        ("received_at < ?", filters.until),
    ):
        if value is not None:
            conditions.append(condition)
            values.append(value)
    if after is not None:
        # The keyset: strictly past the last item of the previous page in (received_at, id)
        # order; the first term lets SQLite seek the index instead of scanning for the rest.
        conditions.append("received_at <= ? AND (received_at < ? OR id < ?)")
        values += [after[0], after[0], after[1]]
    index = "events_subject" if filters.subject is not None else "events_received"
    where = " AND ".join(conditions) or "1"
    rows = db.execute(
        "SELECT id, source, type, subject, received_at, body"  # noqa: S608 - fixed parts
        f" FROM events INDEXED BY {index} WHERE {where}"
        " ORDER BY received_at DESC, id DESC LIMIT ?",
        [*values, limit],
    ).fetchall()
    states: dict[str, dict[str, DeliveryState]] = {row[0]: {} for row in rows}
    for chunk in chunks(db, [(row[0],) for row in rows]):
        marks = ",".join("?" * len(chunk))
        for event_id, subscriber, state in db.execute(
            "SELECT event_id, subscriber, state FROM deliveries"  # noqa: S608 - "?"
            f" WHERE event_id IN ({marks}) ORDER BY id",
            [value for (value,) in chunk],
        ):
            states[event_id][subscriber] = state
    return [as_struct.event_row(row, states[row[0]]) for row in rows]


def event_record(db: sqlite3.Connection, event_id: str) -> EventRecord | None:
    event = db.execute("SELECT received_at, body FROM events WHERE id = ?", (event_id,)).fetchone()
    if event is None:
        return None
    deliveries = db.execute(
        "SELECT id, subscriber, state, next_attempt_at FROM deliveries"
        " WHERE event_id = ? ORDER BY id",
        (event_id,),
    ).fetchall()
    attempts = db.execute(
        "SELECT a.delivery_id, a.started_at, a.duration, a.outcome, a.status_code,"
        " a.error, a.response_excerpt FROM attempts a"
        " JOIN deliveries d ON d.id = a.delivery_id WHERE d.event_id = ? ORDER BY a.id",
        (event_id,),
    ).fetchall()
    return as_struct.event_record(event_id, event, deliveries, attempts)


def dead_letter_page(
    db: sqlite3.Connection,
    *,
    subscriber: str | None,
    after: tuple[float, int] | None,
    limit: int,
) -> list[DeadLetter]:
    dead_at, delivery_id = after if after is not None else (None, None)
    rows = db.execute(
        # Every attempt recorded, as the event's page lists them: the `attempts`
        # column counts only those since the last redrive or replay.
        "SELECT d.id, d.event_id, d.subscriber,"
        " (SELECT COUNT(*) FROM attempts a WHERE a.delivery_id = d.id),"
        " d.last_error, d.finished_at"
        " FROM deliveries d INDEXED BY deliveries_dead"
        " WHERE d.state = 'dead' AND (? IS NULL OR d.subscriber = ?)"
        " AND (? IS NULL OR d.finished_at < ? OR (d.finished_at = ? AND d.id < ?))"
        " ORDER BY d.finished_at DESC, d.id DESC LIMIT ?",
        (subscriber, subscriber, dead_at, dead_at, dead_at, delivery_id, limit),
    ).fetchall()
    return [as_struct.dead_letter(row) for row in rows]


def dead_counts(db: sqlite3.Connection) -> dict[str, int]:
    rows = db.execute(
        "SELECT subscriber, COUNT(*) FROM deliveries INDEXED BY deliveries_dead"
        " WHERE state = 'dead' GROUP BY subscriber"
    ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


def stats(db: sqlite3.Connection) -> dict[str, int]:
    counts = {"events": db.execute("SELECT COUNT(*) FROM events").fetchone()[0]}
    for state in ("pending", "held", "delivered", "dead"):
        counts[state] = 0
    for state, count in db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
        counts[state] = count
    counts["quarantined"] = db.execute(
        "SELECT COUNT(*) FROM quarantine WHERE released_as IS NULL"
    ).fetchone()[0]
    return counts

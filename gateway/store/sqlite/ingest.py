"""What comes in, on SQLite: events with their deliveries (the writer's hot path, set-based), and
authenticated payloads the adapter could not read, kept aside in quarantine until `gateway
reprocess` releases them. Functions of the writer's connection, inside its transaction (reads
of the quarantine: the reader's)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.store import rows as as_struct
from gateway.store.base import AcceptOutcome, NewEvent, QuarantinedPayload, released_as
from gateway.store.ordering import ordering_pairs, place, wanted_keys
from gateway.store.sqlite.ordering import busy_keys
from gateway.store.sqlite.statements import chunks, insert_rows

__all__ = [
    "drop_quarantined",
    "insert_events",
    "note_quarantine_error",
    "quarantine",
    "quarantined",
    "release_quarantined",
]


def insert_events(db: sqlite3.Connection, events: list[NewEvent]) -> list[AcceptOutcome]:
    """Insert events and their deliveries; for each, accepted or duplicate (of a stored event,
    or of an earlier copy in the same batch: 50 concurrent retries arrive together).

    Each statement is one `sqlite3_step` (the RETURNING clause or executemany would be one per
    row), and the writer thread waits for the GIL after every step: a statement per row would
    hand the GIL back and forth with the event loop once per event. The batch runs inside
    BEGIN IMMEDIATE, so nobody else writes between the duplicate check and the insert.
    """
    stored: set[str] = set()
    for chunk in chunks(db, [(event.id,) for event in events]):
        marks = ",".join("?" * len(chunk))
        stored.update(
            row[0]
            for row in db.execute(
                f"SELECT id FROM events WHERE id IN ({marks})",  # noqa: S608 - only "?" marks
                [value for row in chunk for value in row],
            )
        )
    outcomes: list[AcceptOutcome] = []
    accepted: list[NewEvent] = []
    for event in events:
        if event.id in stored:
            outcomes.append("duplicate")
            continue
        stored.add(event.id)  # a later copy in this batch is a duplicate
        outcomes.append("accepted")
        accepted.append(event)
    # An ordered delivery is held when its key already has one pending or held: stored before
    # (one look per key), or earlier in this batch (batch order is commit order).
    busy = busy_keys(db, wanted_keys(accepted))
    new_events: list[tuple[str, str, str, float, bytes, str | None, str | None]] = []
    deliveries: list[tuple[str, str, float, float, str, str | None]] = []
    for event in accepted:
        new_events.append(
            (
                event.id,
                event.source,
                event.type,
                event.received_at,
                event.body,
                event.subject,
                event.status,
            )
        )
        keys = dict(ordering_pairs(event))
        for subscriber in event.subscribers:
            key = keys.get(subscriber)
            state = place(subscriber, key, busy)
            deliveries.append(
                (event.id, subscriber, event.received_at, event.received_at, state, key)
            )
    insert_rows(db, "events (id, source, type, received_at, body, subject, status)", new_events)
    insert_rows(
        db,
        "deliveries (event_id, subscriber, created_at, next_attempt_at, state, ordering_key)",
        deliveries,
    )
    return outcomes


def quarantine(
    db: sqlite3.Connection,
    *,
    source: str,
    received_at: float,
    body: bytes,
    headers: str,
    verification: str,
    error: str,
) -> int:
    """Keep an unreadable payload (`headers` as JSON); its quarantine id."""
    cursor = db.execute(
        "INSERT INTO quarantine (source, received_at, body, headers, verification, error)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (source, received_at, body, headers, verification, error),
    )
    return int(cursor.lastrowid or 0)


def quarantined(db: sqlite3.Connection) -> list[QuarantinedPayload]:
    """The payloads still waiting, oldest first."""
    rows = db.execute(
        "SELECT id, source, received_at, body, headers, verification, error"
        " FROM quarantine WHERE released_as IS NULL ORDER BY id"
    ).fetchall()
    return [as_struct.quarantined_payload(row) for row in rows]


def release_quarantined(
    db: sqlite3.Connection, quarantine_id: int, events: Sequence[NewEvent], *, now: float
) -> list[AcceptOutcome]:
    """Accept what a quarantined payload became and mark it released, in one transaction."""
    batch = list(events)
    outcomes = insert_events(db, batch) if batch else []
    db.execute(
        "UPDATE quarantine SET released_as = ?, released_at = ? WHERE id = ?",
        (released_as(batch), now, quarantine_id),
    )
    return outcomes


def note_quarantine_error(db: sqlite3.Connection, quarantine_id: int, error: str) -> None:
    db.execute("UPDATE quarantine SET error = ? WHERE id = ?", (error, quarantine_id))


def drop_quarantined(db: sqlite3.Connection, quarantine_id: int) -> bool:
    cursor = db.execute(
        "DELETE FROM quarantine WHERE id = ? AND released_as IS NULL", (quarantine_id,)
    )
    return cursor.rowcount > 0

"""Retention on SQLite: one short batch at a time, from the oldest event (`events_received`)
and the oldest quarantined payloads, never a scan of a table."""

from __future__ import annotations

import sqlite3

from gateway.store.base import Purged
from gateway.store.sqlite.statements import chunks

__all__ = ["purge_expired"]


def purge_expired(db: sqlite3.Connection, *, before: float, after: float, limit: int) -> Purged:
    """Store.purge_expired, in the writer's transaction."""
    # The oldest events first, from `events_received`; whether each may go is one look
    # into the (event_id, subscriber) index. Kept ones are passed over by `after`.
    rows = db.execute(
        "SELECT e.id, e.received_at, NOT EXISTS (SELECT 1 FROM deliveries d"
        " WHERE d.event_id = e.id AND d.state <> 'delivered')"
        " FROM events e INDEXED BY events_received"
        " WHERE e.received_at > ? AND e.received_at < ?"
        " ORDER BY e.received_at LIMIT ?",
        (after, before, limit),
    ).fetchall()
    expired = [(row[0],) for row in rows if row[2]]
    for chunk in chunks(db, expired):
        marks = ",".join("?" * len(chunk))
        ids = [value for (value,) in chunk]
        # Children first: the foreign keys are enforced.
        db.execute(
            "DELETE FROM attempts WHERE delivery_id IN"  # noqa: S608 - only "?" marks
            f" (SELECT id FROM deliveries WHERE event_id IN ({marks}))",
            ids,
        )
        db.execute(f"DELETE FROM deliveries WHERE event_id IN ({marks})", ids)  # noqa: S608
        db.execute(f"DELETE FROM events WHERE id IN ({marks})", ids)  # noqa: S608
    released = db.execute(
        "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
        " INDEXED BY quarantine_released WHERE released_as IS NOT NULL"
        " ORDER BY released_at LIMIT ?)",
        (limit,),
    ).rowcount
    stale = db.execute(
        "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
        " INDEXED BY quarantine_waiting WHERE released_as IS NULL AND received_at < ?"
        " ORDER BY received_at LIMIT ?)",
        (before, max(0, limit - released)),
    ).rowcount
    return Purged(
        events=len(expired),
        quarantined=released + stale,
        scanned_to=float(rows[-1][1]) if len(rows) == limit else None,
    )

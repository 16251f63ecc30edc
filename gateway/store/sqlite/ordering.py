"""Ordered delivery on SQLite (the rule: gateway/store/ordering.py): whether keys are busy, and
the release of the next held delivery of a key.

One writer at a time (the writers' lock, BEGIN IMMEDIATE) is what keeps "busy?" true from the
read to the write: no other transaction writes in between. Two partial indexes answer each
question with one seek per key (`deliveries_ordered`: the pending one of a key,
`deliveries_held`: the held ones, in commit order)."""

from __future__ import annotations

import sqlite3

from gateway.store.ordering import Key
from gateway.store.sqlite.statements import chunks

__all__ = ["busy_keys", "release_next"]


def busy_keys(db: sqlite3.Connection, pairs: list[Key]) -> set[Key]:
    """Those of `pairs` (subscriber, ordering key) with a delivery pending or held: two index
    seeks per pair (deliveries_ordered, deliveries_held), one statement per chunk."""
    busy: set[Key] = set()
    for chunk in chunks(db, pairs):
        rows = ",".join(["(?, ?)"] * len(chunk))
        busy.update(
            (str(row[0]), str(row[1]))
            for row in db.execute(
                f"WITH wanted (subscriber, ordering_key) AS (VALUES {rows})"  # noqa: S608
                " SELECT w.subscriber, w.ordering_key FROM wanted w WHERE EXISTS"
                " (SELECT 1 FROM deliveries d INDEXED BY deliveries_ordered"
                " WHERE d.state = 'pending' AND d.subscriber = w.subscriber"
                " AND d.ordering_key = w.ordering_key)"
                " OR EXISTS (SELECT 1 FROM deliveries d INDEXED BY deliveries_held"
                " WHERE d.state = 'held' AND d.subscriber = w.subscriber"
                " AND d.ordering_key = w.ordering_key)",
                [value for pair in chunk for value in pair],
            )
        )
    return busy


def release_next(db: sqlite3.Connection, pairs: list[Key], now: float) -> None:
    """Make the first held delivery (in commit order: id) of each (subscriber, ordering key)
    pending, due `now`, unless one of that key is pending already. Called in the transaction
    that settled the key's pending delivery, so the next one is claimable the moment it
    commits."""
    for chunk in chunks(db, pairs, reserved=1):
        rows = ",".join(["(?, ?)"] * len(chunk))
        db.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ? WHERE id IN"  # noqa: S608
            " (SELECT (SELECT d.id FROM deliveries d INDEXED BY deliveries_held"
            " WHERE d.state = 'held' AND d.subscriber = r.column1"
            " AND d.ordering_key = r.column2 ORDER BY d.id LIMIT 1)"
            f" FROM (VALUES {rows}) r WHERE NOT EXISTS (SELECT 1 FROM deliveries p"
            " INDEXED BY deliveries_ordered WHERE p.state = 'pending'"
            " AND p.subscriber = r.column1 AND p.ordering_key = r.column2))",
            [now, *(value for pair in chunk for value in pair)],
        )

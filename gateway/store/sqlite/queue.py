"""The delivery queue on SQLite: claims under leases (bounded by each subscriber's
`max_in_flight` for every process together), heartbeats and the leases of silent owners, attempt
records under fencing tokens, the next due time, and redrive and replay, which put deliveries
back in it. Functions of the writer's connection inside its transaction (BEGIN IMMEDIATE, under
the writers' flock), so no other process claims or records in between; `next_due_at` reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from gateway.store import rows as as_struct
from gateway.store.base import AttemptRecord, Claim, ClaimRequest
from gateway.store.decisions import state_after
from gateway.store.ordering import Key, ordering_key, place, released_keys
from gateway.store.sqlite.ordering import busy_keys, release_next
from gateway.store.sqlite.statements import chunks, insert_rows

__all__ = [
    "claim_due",
    "heartbeat",
    "next_due_at",
    "record_attempts",
    "redrive",
    "release_leases",
    "release_leases_of_silent_owners",
    "replay",
]


def claim_due(db: sqlite3.Connection, now: float, claim: ClaimRequest) -> Claim:
    """Lease up to `claim.limit` due deliveries to its subscriber (Store.claim_due), as of
    `now`."""
    subscriber, limit, max_in_flight = claim.subscriber, claim.limit, claim.max_in_flight
    # Counted and claimed in the writer's transaction (BEGIN IMMEDIATE, under the writers'
    # flock): no other process claims in between, nor takes the same slots.
    ((live,),) = db.execute(
        "SELECT COUNT(*) FROM deliveries INDEXED BY deliveries_leased"
        " WHERE state = 'pending' AND lease_until IS NOT NULL AND subscriber = ?"
        " AND lease_until >= ?",
        (subscriber, now),
    ).fetchall()
    room = max_in_flight - live
    if room <= 0:
        return Claim(deliveries=(), full=True)
    rows = db.execute(
        "SELECT d.id, d.event_id, d.subscriber, d.attempts, d.created_at,"
        " d.next_attempt_at, d.lease_token, e.body, e.source, e.type,"
        " d.traceparent, d.tracestate"
        " FROM deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.state = 'pending' AND d.subscriber = ? AND d.next_attempt_at <= ?"
        " AND (d.lease_until IS NULL OR d.lease_until < ?)"
        " ORDER BY d.next_attempt_at, d.id LIMIT ?",
        # A negative LIMIT is no limit to SQLite: a caller's miscount must not lease everything.
        (subscriber, now, now, min(max(limit, 0), room)),
    ).fetchall()
    # Each claim increments the row's token: the new holder's is the old one + 1, and
    # every earlier holder's token is now stale (a fencing token).
    for chunk in chunks(db, [(row[0],) for row in rows], reserved=2):
        marks = ",".join("?" * len(chunk))
        db.execute(
            "UPDATE deliveries SET lease_until = ?, lease_owner = ?,"  # noqa: S608 - "?"
            f" lease_token = lease_token + 1 WHERE id IN ({marks})",
            [now + claim.lease_seconds, claim.owner, *(value for (value,) in chunk)],
        )
    return Claim(
        deliveries=tuple(as_struct.claimed_delivery(row, lease_token=row[6] + 1) for row in rows),
        full=live + len(rows) >= max_in_flight,
    )


def release_leases(db: sqlite3.Connection, owner: str) -> None:
    """Give back every lease `owner` holds, and forget its heartbeat."""
    db.execute(
        "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL"
        " WHERE lease_owner = ? AND state = 'pending'",
        (owner,),
    )
    db.execute("DELETE FROM dispatcher_heartbeats WHERE owner = ?", (owner,))


def heartbeat(db: sqlite3.Connection, owner: str, *, now: float) -> None:
    db.execute(
        "INSERT INTO dispatcher_heartbeats (owner, beat_at) VALUES (?, ?)"
        " ON CONFLICT (owner) DO UPDATE SET beat_at = excluded.beat_at",
        (owner, now),
    )


def release_leases_of_silent_owners(
    db: sqlite3.Connection, silent_for: float, *, now: float
) -> list[str]:
    """Give back the leases of every owner silent for more than `silent_for` seconds; who."""
    silent = [
        str(owner)
        for (owner,) in db.execute(
            "SELECT owner FROM dispatcher_heartbeats WHERE beat_at < ?",
            (now - silent_for,),
        )
    ]
    for owner in silent:
        release_leases(db, owner)
    return silent


def record_attempts(
    db: sqlite3.Connection, records: Sequence[AttemptRecord], now: float
) -> list[bool]:
    """Record attempts and move their deliveries on as decided: delivered, pending a retry, or
    dead; for each record, whether it applied. Set-based, as `insert_events` and for the same
    reason.

    A record applies only while its lease token still holds the lease of a pending delivery
    (fencing): a worker whose lease ran out and was claimed again (a new token), whose lease
    was given back (no lease), or which recorded already (that releases the lease) changes
    nothing. Which ones hold is read first, in the same BEGIN IMMEDIATE transaction, so nothing
    changes between that read and the writes. A delivered or dead ordered delivery releases
    the next of its key (`release_next`), due `now` by the store's clock.
    """
    held: set[tuple[int, int]] = set()
    keys: dict[int, Key] = {}
    for chunk in chunks(db, [(record.attempt.delivery_id,) for record in records]):
        marks = ",".join("?" * len(chunk))
        for row in db.execute(
            "SELECT id, lease_token, subscriber, ordering_key FROM deliveries"  # noqa: S608
            f" WHERE state = 'pending' AND lease_until IS NOT NULL AND id IN ({marks})",
            [value for (value,) in chunk],
        ):
            held.add((int(row[0]), int(row[1])))
            if row[3] is not None:
                keys[int(row[0])] = (str(row[2]), str(row[3]))
    applied: list[bool] = []
    for record in records:
        key = (record.attempt.delivery_id, record.lease_token)
        applied.append(key in held)
        held.discard(key)  # one record per lease
    kept = [record for record, ok in zip(records, applied, strict=True) if ok]
    insert_rows(
        db,
        "attempts (delivery_id, started_at, duration, outcome, status_code, error,"
        " response_excerpt)",
        [as_struct.attempt_values(record.attempt) for record in kept],
    )
    updates: list[tuple[Any, ...]] = []
    for record in kept:
        attempt = record.attempt
        state, next_at, finished_at = state_after(
            record.decision, attempt.started_at + attempt.duration
        )
        updates.append(
            (attempt.delivery_id, record.lease_token, state, next_at, attempt.error, finished_at)
        )
    for chunk in chunks(db, updates):
        rows = ",".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
        # One row per id (one record per lease, above); the token and state conditions repeat
        # the check above in the statement that writes.
        db.execute(
            "WITH outcome (id, token, state, next_at, error, finished_at) AS"  # noqa: S608
            f" (VALUES {rows})"
            " UPDATE deliveries SET state = outcome.state, attempts = attempts + 1,"
            " next_attempt_at = COALESCE(outcome.next_at, next_attempt_at), lease_until = NULL,"
            " lease_owner = NULL, last_error = outcome.error, finished_at = outcome.finished_at"
            " FROM outcome WHERE deliveries.id = outcome.id"
            " AND deliveries.lease_token = outcome.token AND deliveries.state = 'pending'"
            " AND deliveries.lease_until IS NOT NULL",
            [value for row in chunk for value in row],
        )
    settled = [(record.attempt.delivery_id, record.decision) for record in kept]
    release_next(db, released_keys(settled, keys), now)
    return applied


def next_due_at(db: sqlite3.Connection, subscribers: Sequence[str]) -> float | None:
    """When the earliest unleased pending delivery to one of `subscribers` is due."""
    # Per subscriber, the first pending delivery in the (subscriber, next_attempt_at) index
    # that nobody holds a lease on: a walk of a few index entries (at most the ones in
    # flight), where MIN over an expression would read every pending row.
    times = []
    for subscriber in subscribers:
        row = db.execute(
            "SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_pending"
            " WHERE state = 'pending' AND subscriber = ? AND lease_until IS NULL"
            " ORDER BY next_attempt_at LIMIT 1",
            (subscriber,),
        ).fetchone()
        if row is not None:
            times.append(float(row[0]))
    return min(times, default=None)


def redrive(
    db: sqlite3.Connection,
    *,
    now: float,
    subscriber: str | None,
    since: float | None,
    until: float | None,
    traceparent: str | None,
    tracestate: str | None,
) -> int:
    """Make dead deliveries pending again, or held behind their key (Store.redrive); how many."""
    dead = db.execute(
        "SELECT id, subscriber, ordering_key FROM deliveries"
        " WHERE state = 'dead' AND (? IS NULL OR subscriber = ?)"
        " AND (? IS NULL OR finished_at >= ?) AND (? IS NULL OR finished_at <= ?)"
        " ORDER BY id",
        (subscriber, subscriber, since, since, until, until),
    ).fetchall()
    # In commit order: of several dead letters of one key, the first goes out, the
    # others wait behind it (and behind whatever of the key is pending already).
    busy = busy_keys(
        db, list(dict.fromkeys((row[1], row[2]) for row in dead if row[2] is not None))
    )
    updates = [
        (place(name, key, busy), now, traceparent, tracestate, delivery_id)
        for delivery_id, name, key in dead
    ]
    db.executemany(
        "UPDATE deliveries SET state = ?, attempts = 0, next_attempt_at = ?,"
        " finished_at = NULL, lease_until = NULL, lease_owner = NULL,"
        " traceparent = ?, tracestate = ? WHERE id = ?",
        updates,
    )
    return len(updates)


def replay(
    db: sqlite3.Connection,
    event_id: str,
    subscribers: Sequence[str],
    *,
    now: float,
    ordered: Collection[str],
    traceparent: str | None,
    tracestate: str | None,
) -> int | None:
    """Deliver a stored event again to `subscribers` (Store.replay); None without the event."""
    event = db.execute("SELECT source, subject FROM events WHERE id = ?", (event_id,)).fetchone()
    if event is None:
        return None
    for subscriber in subscribers:
        key = ordering_key(event[0], event[1]) if subscriber in ordered else None
        current = db.execute(
            "SELECT state, ordering_key FROM deliveries WHERE event_id = ? AND subscriber = ?",
            (event_id, subscriber),
        ).fetchone()
        if current is not None and current[0] in ("pending", "held"):
            # Still waiting: it keeps its state and its place, with a fresh schedule.
            state, key = current
        elif key is not None and busy_keys(db, [(subscriber, key)]):
            state = "held"
        else:
            state = "pending"
        db.execute(
            "INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at,"
            " state, ordering_key, traceparent, tracestate)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (event_id, subscriber) DO UPDATE SET"
            " state = excluded.state, attempts = 0,"
            " next_attempt_at = excluded.next_attempt_at, finished_at = NULL,"
            " lease_until = NULL, lease_owner = NULL, ordering_key = excluded.ordering_key,"
            " traceparent = excluded.traceparent, tracestate = excluded.tracestate",
            (event_id, subscriber, now, now, state, key, traceparent, tracestate),
        )
    return len(subscribers)

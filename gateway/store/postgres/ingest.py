"""What comes in, on PostgreSQL: events with their deliveries, and quarantined payloads.

**Group commit.** `accept` and `record_attempt` go to a `GroupCommit` (gateway/store/
group_commit.py): one task per node drains what is waiting into one transaction and one WAL
flush (`write_batch`). `INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id` decides accepted or
duplicate, also between nodes (the primary key waits for the other's commit); a second copy in
one batch is a duplicate of the first. Events are inserted in id order, so two nodes' batches
never wait on each other's rows crosswise (no deadlock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store import rows as as_struct
from gateway.store.base import AcceptOutcome, NewEvent, QuarantinedPayload, released_as
from gateway.store.ordering import ordering_pairs, place, wanted_keys
from gateway.store.postgres.connection import Connection
from gateway.store.postgres.ordering import busy_keys, lock_keys
from gateway.store.postgres.queue import AttemptRecord, record_attempts
from gateway.store.postgres.wakeups import NOTIFY

__all__ = [
    "drop_quarantined",
    "insert_events",
    "note_quarantine_error",
    "quarantine",
    "quarantined",
    "release_quarantined",
    "write_batch",
]


async def write_batch(
    db: Connection,
    events: Sequence[NewEvent],
    records: Sequence[AttemptRecord],
    now: float | None,
) -> tuple[list[AcceptOutcome], list[bool]]:
    """One group commit's writes, in the caller's transaction: every key lock first (those of
    the events to insert, and of the deliveries whose attempts settle), then the attempts'
    rows, then the events (gateway/store/postgres/ordering.py: the locking order)."""
    firsts: dict[str, NewEvent] = {}
    for event in events:
        firsts.setdefault(event.id, event)
    pairs = [pair for event in firsts.values() for pair in ordering_pairs(event)]
    if records:
        cursor = await db.execute(
            "SELECT subscriber, ordering_key FROM deliveries"
            " WHERE id = ANY(%s) AND ordering_key IS NOT NULL",
            ([record.attempt.delivery_id for record in records],),
        )
        pairs += [(str(row[0]), str(row[1])) for row in await cursor.fetchall()]
    locked = await lock_keys(db, pairs)
    made_pending = False
    applied: list[bool] = []
    if records:
        applied, made_pending = await record_attempts(db, records, now, locked)
    outcomes: list[AcceptOutcome] = []
    if events:
        outcomes, accepted_pending = await insert_events(db, events, firsts)
        made_pending = made_pending or accepted_pending
    if made_pending:
        await db.execute(NOTIFY)
    return outcomes, applied


async def insert_events(
    db: Connection, events: Sequence[NewEvent], firsts: dict[str, NewEvent]
) -> tuple[list[AcceptOutcome], bool]:
    """Insert events and their deliveries; for each event, accepted or duplicate (of a stored
    event, or of an earlier copy in this batch), and whether a delivery was made pending."""
    ordered = sorted(firsts.values(), key=lambda event: event.id)
    cursor = await db.execute(
        "INSERT INTO events (id, source, type, received_at, body, subject, status)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::bytea[],"
        " %s::text[], %s::text[]) ON CONFLICT (id) DO NOTHING RETURNING id",
        (
            [event.id for event in ordered],
            [event.source for event in ordered],
            [event.type for event in ordered],
            [event.received_at for event in ordered],
            [event.body for event in ordered],
            [event.subject for event in ordered],
            [event.status for event in ordered],
        ),
    )
    inserted = {str(row[0]) for row in await cursor.fetchall()}
    outcomes: list[AcceptOutcome] = []
    answered: set[str] = set()
    for event in events:
        first_copy = event.id not in answered
        answered.add(event.id)
        outcomes.append("accepted" if first_copy and event.id in inserted else "duplicate")
    # Arrival order is commit order: of two events of one key in this batch, the first goes
    # out, the second is held behind it. Read after the key locks (READ COMMITTED).
    accepted = [event for event in firsts.values() if event.id in inserted]
    busy = await busy_keys(db, wanted_keys(accepted))
    columns: tuple[list[Any], ...] = ([], [], [], [], [])
    for event in accepted:
        keys = dict(ordering_pairs(event))
        for subscriber in event.subscribers:
            key = keys.get(subscriber)
            state = place(subscriber, key, busy)
            for column, value in zip(
                columns, (event.id, subscriber, event.received_at, state, key), strict=True
            ):
                column.append(value)
    if columns[0]:
        # Ids (commit order among held deliveries) follow the arrays' order.
        await db.execute(
            "INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at, state,"
            " ordering_key) SELECT e, s, c, c, st, k FROM unnest(%s::text[], %s::text[],"
            " %s::float8[], %s::text[], %s::text[]) WITH ORDINALITY AS r(e, s, c, st, k, n)"
            " ORDER BY n",
            columns,
        )
    return outcomes, "pending" in columns[3]


async def quarantine(
    db: Connection,
    *,
    source: str,
    received_at: float,
    body: bytes,
    headers: str,
    verification: str,
    error: str,
) -> int:
    """Keep an unreadable payload (`headers` as JSON); its quarantine id."""
    cursor = await db.execute(
        "INSERT INTO quarantine (source, received_at, body, headers, verification, error)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (source, received_at, body, headers, verification, error),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def quarantined(db: Connection) -> list[QuarantinedPayload]:
    """The payloads still waiting, oldest first."""
    cursor = await db.execute(
        "SELECT id, source, received_at, body, headers, verification, error"
        " FROM quarantine WHERE released_as IS NULL ORDER BY id"
    )
    rows = await cursor.fetchall()
    return [as_struct.quarantined_payload(row) for row in rows]


async def release_quarantined(
    db: Connection, quarantine_id: int, events: Sequence[NewEvent], *, now: float | None
) -> list[AcceptOutcome]:
    """Accept what a quarantined payload became and mark it released, in the caller's
    transaction."""
    outcomes: list[AcceptOutcome] = []
    if events:
        outcomes, _ = await write_batch(db, events, [], now)
    await db.execute(
        "UPDATE quarantine SET released_as = %s, released_at = finrelay_now(%s) WHERE id = %s",
        (released_as(events), now, quarantine_id),
    )
    return outcomes


async def note_quarantine_error(db: Connection, quarantine_id: int, error: str) -> None:
    await db.execute("UPDATE quarantine SET error = %s WHERE id = %s", (error, quarantine_id))


async def drop_quarantined(db: Connection, quarantine_id: int) -> bool:
    cursor = await db.execute(
        "DELETE FROM quarantine WHERE id = %s AND released_as IS NULL", (quarantine_id,)
    )
    return cursor.rowcount > 0

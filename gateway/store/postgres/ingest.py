"""What comes in, on PostgreSQL: events with their deliveries, and quarantined payloads.

**Group commit.** `accept` and `record_attempt` go to a `GroupCommit` (gateway/store/
group_commit.py): one writer thread per node drains what is waiting into one transaction and one
WAL flush (`apply_batch`). `INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id` decides accepted
or duplicate, also between nodes (the primary key waits for the other's commit); a second copy
in one batch is a duplicate of the first. Events are inserted in id order, so two nodes' batches
never wait on each other's rows crosswise (no deadlock).

**Round trips.** A transaction's locks and its session are held from its first statement to
its commit, so a batch costs as few round trips as it can: events none of whose subscribers is
ordered need no key lock and nothing read first, and go in as one statement (`_ACCEPT`: the
events, their deliveries and the wake-up); a batch of such events alone is that statement in
autocommit, its own transaction: one round trip in all. Attempt records beside such events
come first, recorded as queue.py records them anywhere: those of unordered deliveries in one
statement (`record_unordered`), nothing read first; only if an ordered delivery's record could
apply, its key locked and it recorded the general way (`record_ordered`). Unordered events and
unordered deliveries' records are then four round trips: BEGIN, the records, the events,
COMMIT. Ordered events take the general way (`write_batch`): every key lock in one ascending
sweep, the events' and the records' deliveries' alike, then reads and writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, LiteralString

from gateway.store import rows as as_struct
from gateway.store.base import AcceptOutcome, NewEvent, QuarantinedPayload, released_as
from gateway.store.ordering import ordering_pairs, place, wanted_keys
from gateway.store.postgres.connection import Connection
from gateway.store.postgres.ordering import busy_keys, lock_keys
from gateway.store.postgres.queue import (
    AttemptRecord,
    record_attempts,
    record_ordered,
    record_unordered,
)
from gateway.store.postgres.wakeups import NOTIFY

__all__ = [
    "apply_batch",
    "drop_quarantined",
    "insert_events",
    "note_quarantine_error",
    "quarantine",
    "quarantined",
    "release_quarantined",
    "write_batch",
]


# Events of no ordered subscriber, with their deliveries (pending, due at once, ids in the
# arrays' order) and the wake-up, in one statement: the events in id order (see above), the
# deliveries of those inserted only (not of duplicates), NOTIFY (wakeups.py) only if one was
# made; the last SELECT reads `woken`, or PostgreSQL would skip it. The deliveries' foreign key
# is checked at the statement's end, when its events are in.
_ACCEPT: LiteralString = (
    "WITH inserted AS (INSERT INTO events (id, source, type, received_at, body, subject,"
    " status) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[],"
    " %s::bytea[], %s::text[], %s::text[]) ON CONFLICT (id) DO NOTHING RETURNING id),"
    " made AS (INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at,"
    " state) SELECT r.e, r.s, r.c, r.c, 'pending' FROM unnest(%s::text[], %s::text[],"
    " %s::float8[]) WITH ORDINALITY AS r(e, s, c, n) WHERE r.e IN (SELECT id FROM inserted)"
    " ORDER BY r.n RETURNING 1),"
    " woken AS (SELECT pg_notify('finrelay_deliveries', '') WHERE EXISTS (SELECT FROM made))"
    " SELECT array(SELECT id FROM inserted)"
    " FROM (SELECT count(*) FROM woken) AS notified"
)


async def apply_batch(
    db: Connection,
    events: Sequence[NewEvent],
    records: Sequence[AttemptRecord],
    now: float | None,
) -> tuple[list[AcceptOutcome], list[bool]]:
    """One group commit's writes in one transaction of their own, on an autocommit connection:
    events alone, none of them ordered, as one statement (its own transaction); anything else
    between BEGIN and COMMIT (`write_batch`)."""
    if not records and not any(ordering_pairs(event) for event in events):
        return await _accept(db, events, _firsts(events)), []
    async with db.transaction():
        return await write_batch(db, events, records, now)


async def write_batch(
    db: Connection,
    events: Sequence[NewEvent],
    records: Sequence[AttemptRecord],
    now: float | None,
) -> tuple[list[AcceptOutcome], list[bool]]:
    """One group commit's writes, in the caller's transaction: key locks first, then the
    attempts' rows, then the events (gateway/store/postgres/ordering.py: the locking order).
    With an ordered event among them, every key is locked in one sweep (the events' and those
    of the deliveries whose attempts settle): a second sweep after the first would not be in
    ascending order, and could wait for a key while holding another, or a row. Without one,
    the events lock no key, and the records lock what they need as queue.py does
    (`record_unordered`, then `record_ordered`): nothing read first for them."""
    firsts = _firsts(events)
    ordered = [pair for event in firsts.values() for pair in ordering_pairs(event)]
    made_pending = False
    applied: list[bool] = []
    if ordered:
        pairs = list(ordered)
        if records:
            cursor = await db.execute(
                "SELECT subscriber, ordering_key FROM deliveries"
                " WHERE id = ANY(%s) AND ordering_key IS NOT NULL",
                ([record.attempt.delivery_id for record in records],),
            )
            pairs += [(str(row[0]), str(row[1])) for row in await cursor.fetchall()]
        locked = await lock_keys(db, pairs)
        if records:
            applied, made_pending = await record_attempts(db, records, now, locked)
    elif records:
        first = await record_unordered(db, records, keys_locked=False)
        applied, made_pending = await record_ordered(db, records, now, first)
    outcomes: list[AcceptOutcome] = []
    if events and not ordered:
        outcomes = await _accept(db, events, firsts)  # with its own wake-up
    elif events:
        outcomes, accepted_pending = await insert_events(db, events, firsts)
        made_pending = made_pending or accepted_pending
    if made_pending:
        await db.execute(NOTIFY)
    return outcomes, applied


def _event_columns(events: Sequence[NewEvent]) -> tuple[list[Any], ...]:
    """The events as the arrays `unnest` takes: id, source, type, received_at, body, subject,
    status."""
    return (
        [event.id for event in events],
        [event.source for event in events],
        [event.type for event in events],
        [event.received_at for event in events],
        [event.body for event in events],
        [event.subject for event in events],
        [event.status for event in events],
    )


def _firsts(events: Sequence[NewEvent]) -> dict[str, NewEvent]:
    """The first copy of each event id, in arrival order."""
    firsts: dict[str, NewEvent] = {}
    for event in events:
        firsts.setdefault(event.id, event)
    return firsts


def _outcomes(events: Sequence[NewEvent], inserted: set[str]) -> list[AcceptOutcome]:
    """Accepted for the first copy of each inserted event; duplicate for the others (of a
    stored event, or of an earlier copy in this batch)."""
    outcomes: list[AcceptOutcome] = []
    answered: set[str] = set()
    for event in events:
        first_copy = event.id not in answered
        answered.add(event.id)
        outcomes.append("accepted" if first_copy and event.id in inserted else "duplicate")
    return outcomes


async def _accept(
    db: Connection, events: Sequence[NewEvent], firsts: dict[str, NewEvent]
) -> list[AcceptOutcome]:
    """Events none of whose subscribers is ordered, with their deliveries: one statement
    (`_ACCEPT`)."""
    ordered = sorted(firsts.values(), key=lambda event: event.id)
    deliveries: tuple[list[Any], ...] = ([], [], [])
    for event in firsts.values():
        for subscriber in event.subscribers:
            for column, value in zip(
                deliveries, (event.id, subscriber, event.received_at), strict=True
            ):
                column.append(value)
    cursor = await db.execute(
        _ACCEPT,
        (*_event_columns(ordered), *deliveries),
    )
    row = await cursor.fetchone()
    assert row is not None
    return _outcomes(events, {str(event_id) for event_id in row[0]})


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
        _event_columns(ordered),
    )
    inserted = {str(row[0]) for row in await cursor.fetchall()}
    outcomes = _outcomes(events, inserted)
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

"""The delivery queue on PostgreSQL: claims, leases and heartbeats, attempt records under
fencing tokens, the next due time, and redrive and replay. Functions of a connection inside the
caller's transaction (or on a pooled connection, for single statements).

**Claims** are one short transaction: the subscriber's claim lock (`pg_advisory_xact_lock` on a
key of its name), its live leases counted (`max_in_flight` bounds them for every node together:
two nodes must not both see the same free slots), then one statement: `FOR NO KEY UPDATE SKIP
LOCKED` picks due, unleased rows nobody else is claiming, `lease_token + 1` is the new fencing
token, and the event's body comes back in the same round trip. Nothing else takes a claim lock,
and a claim waits for no row, so claims never deadlock; a batch's attempt records may come first
in the claim's transaction (`record_attempts_then_claim`), holding their rows while the claim
waits for its lock, for the same reason. No connection is held between calls: a send holds none.

**Attempt records** of unordered deliveries are one statement per batch (`_RECORD_UNORDERED`):
no key to lock and nothing to release, so nothing to read first. Those of ordered deliveries go
the general way (`record_under_key_locks`), after their keys' locks (gateway/store/postgres/
ordering.py), and release the next held delivery of a key they end.

**Clock.** "Now" is the database server's clock (`finrelay_now`, the statement's timestamp), the
one clock every node shares, read in the statement that uses it: no offset to measure or drift.
A store given a `clock` (tests) passes its value as `now` instead, for every "now" (None: the
server's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from typing import Any, LiteralString

import msgspec

from gateway.store import rows as as_struct
from gateway.store.base import AttemptRecord, Claim, ClaimRequest
from gateway.store.decisions import state_after
from gateway.store.ordering import Key, ordering_key, place, released_keys
from gateway.store.postgres.connection import Connection
from gateway.store.postgres.ordering import busy_keys, key_pairs, lock_keys, release_next
from gateway.store.postgres.wakeups import NOTIFY

__all__ = [
    "AttemptRecord",
    "FirstPass",
    "claim_due",
    "heartbeat",
    "next_due_at",
    "record_attempts",
    "record_ordered",
    "record_under_key_locks",
    "record_unordered",
    "redrive",
    "release_leases",
    "release_leases_of_silent_owners",
    "replay",
]

# Give back an owner's leases: its rows locked in id order, as every transaction locks rows
# (gateway/store/postgres/ordering.py), so this never deadlocks with an attempt record.
_RELEASE_LEASES_OF: LiteralString = (
    "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL WHERE id IN"
    " (SELECT id FROM deliveries WHERE lease_owner = %(owner)s AND state = 'pending'"
    " ORDER BY id FOR NO KEY UPDATE) AND lease_owner = %(owner)s"
)


# A subscriber's live leases (its sends under way, whoever holds them): a range of
# deliveries_leased, which holds the leased rows only, however long the backlog.
_LIVE_LEASES: LiteralString = (
    "SELECT count(*) FROM deliveries"
    " WHERE state = 'pending' AND lease_until IS NOT NULL AND subscriber = %(subscriber)s"
    " AND lease_until >= finrelay_now(%(now)s)"
)
_CLAIM: LiteralString = (
    "WITH due AS (SELECT id FROM deliveries"
    " WHERE state = 'pending' AND subscriber = %(subscriber)s"
    " AND next_attempt_at <= finrelay_now(%(now)s)"
    " AND (lease_until IS NULL OR lease_until < finrelay_now(%(now)s))"
    " ORDER BY next_attempt_at, id LIMIT %(limit)s"
    " FOR NO KEY UPDATE SKIP LOCKED)"
    " UPDATE deliveries d SET lease_until = finrelay_now(%(now)s) + %(lease)s,"
    " lease_owner = %(owner)s, lease_token = d.lease_token + 1"
    " FROM due, events e WHERE d.id = due.id AND e.id = d.event_id"
    " RETURNING d.id, d.event_id, d.subscriber, d.attempts, d.created_at,"
    " d.next_attempt_at, d.lease_token, e.body, e.source, e.type, d.traceparent, d.tracestate"
)
# pg_advisory_xact_lock's two-int form, as the schema lock (schema.SCHEMA_LOCK): a
# class of keys of its own, one per subscriber, apart from the ordering keys' bigints.
# 0x636c6169: "clai".
CLAIM_LOCK_CLASS = 0x636C6169


async def claim_due(db: Connection, now: float | None, claim: ClaimRequest) -> Claim:
    """Store.claim_due, in the caller's transaction."""
    subscriber, limit, max_in_flight = claim.subscriber, claim.limit, claim.max_in_flight
    params = {
        "subscriber": subscriber,
        "now": now,
        "lease": float(claim.lease_seconds),
        "owner": claim.owner,
    }
    # One claim of this subscriber at a time, across nodes. The count is a statement of
    # its own, after the lock: in READ COMMITTED its snapshot then holds every lease the
    # claim it waited for took (one statement taking the lock would count from before).
    await db.execute("SELECT pg_advisory_xact_lock(%s, %s)", claim_lock(subscriber))
    cursor = await db.execute(_LIVE_LEASES, params)
    counted = await cursor.fetchone()
    live = 0 if counted is None else int(counted[0])
    room = max_in_flight - live
    if room <= 0:
        return Claim(deliveries=(), full=True)
    # The LIMIT a constant, not computed in SQL from the count: a planner that knows it
    # wants a few rows walks deliveries_pending for them, whatever the backlog.
    cursor = await db.execute(
        _CLAIM,
        {**params, "limit": min(max(limit, 0), room)},  # PostgreSQL refuses a negative LIMIT
        # Bodies as they are stored, not hex text to decode.
        binary=True,
    )
    rows = await cursor.fetchall()
    # RETURNING has no order of its own: oldest due first, as claimed.
    rows.sort(key=lambda row: (row[5], row[0]))
    return Claim(
        deliveries=tuple(as_struct.claimed_delivery(row, lease_token=int(row[6])) for row in rows),
        full=live + len(rows) >= max_in_flight,
    )


async def release_leases(db: Connection, owner: str) -> None:
    """Give back every lease `owner` holds, and forget its heartbeat."""
    await db.execute(_RELEASE_LEASES_OF, {"owner": owner})
    await db.execute("DELETE FROM dispatcher_heartbeats WHERE owner = %(owner)s", {"owner": owner})


async def heartbeat(db: Connection, owner: str, *, now: float | None) -> None:
    await db.execute(
        "INSERT INTO dispatcher_heartbeats (owner, beat_at) VALUES (%s, finrelay_now(%s))"
        " ON CONFLICT (owner) DO UPDATE SET beat_at = excluded.beat_at",
        (owner, now),
    )


async def release_leases_of_silent_owners(
    db: Connection, silent_for: float, *, now: float | None
) -> list[str]:
    """Give back the leases of every owner silent for more than `silent_for` seconds; who."""
    # The owners it forgets are exactly those whose leases it gives back; of two nodes
    # doing this at once, one finds them (the other waits for its commit, then none).
    cursor = await db.execute(
        "DELETE FROM dispatcher_heartbeats WHERE beat_at < finrelay_now(%s) - %s RETURNING owner",
        (now, float(silent_for)),
    )
    silent = [str(row[0]) for row in await cursor.fetchall()]
    for owner in silent:
        await db.execute(_RELEASE_LEASES_OF, {"owner": owner})
    return silent


# Attempt records of unordered deliveries, a batch in one statement: nothing to release and no
# key to lock, so nothing to read first. The first record of each (delivery, lease token) counts
# (a second one of the same lease is stale by then); `live`: those whose delivery is still
# pending under that lease. The unordered ones' rows are locked in id order, as every
# transaction locks rows; the update keeps the guard (fencing: a stale token never settles);
# the attempts written are those of the records that settled, in the batch's order. Ordered
# deliveries need their key locked before their row (ordering.py): unless the caller holds
# their keys already (`keys_locked`), one of them among the live settles nothing here, and
# `record_ordered` takes the keys, then comes back. Answered: the records settled, whether
# unordered ones are live, and the live ordered ones with their (subscriber, key).
_RECORD_UNORDERED: LiteralString = (
    "WITH r AS (SELECT * FROM unnest(%(id)s::bigint[], %(token)s::bigint[], %(state)s::text[],"
    " %(next_at)s::float8[], %(finished_at)s::float8[], %(started_at)s::float8[],"
    " %(duration)s::float8[], %(outcome)s::text[], %(status_code)s::int[], %(error)s::text[],"
    " %(excerpt)s::text[]) WITH ORDINALITY AS r(id, token, state, next_at, finished_at,"
    " started_at, duration, outcome, status_code, error, excerpt, n)),"
    " first AS (SELECT DISTINCT ON (id, token) * FROM r ORDER BY id, token, n),"
    " live AS (SELECT f.n, d.subscriber, d.ordering_key FROM first f JOIN deliveries d"
    " ON d.id = f.id AND d.lease_token = f.token"
    " WHERE d.state = 'pending' AND d.lease_until IS NOT NULL),"
    " locked AS (SELECT d.id FROM deliveries d JOIN first f ON d.id = f.id"
    " AND d.lease_token = f.token WHERE d.state = 'pending' AND d.lease_until IS NOT NULL"
    " AND d.ordering_key IS NULL AND (%(keys_locked)s"
    " OR NOT EXISTS (SELECT FROM live WHERE ordering_key IS NOT NULL))"
    " ORDER BY d.id FOR NO KEY UPDATE OF d),"
    " settled AS (UPDATE deliveries d SET state = f.state, attempts = d.attempts + 1,"
    " next_attempt_at = coalesce(f.next_at, d.next_attempt_at), lease_until = NULL,"
    " lease_owner = NULL, last_error = f.error, finished_at = f.finished_at"
    " FROM first f JOIN locked USING (id) WHERE d.id = f.id AND d.lease_token = f.token"
    " AND d.state = 'pending' AND d.lease_until IS NOT NULL RETURNING f.n),"
    " written AS (INSERT INTO attempts (delivery_id, started_at, duration, outcome,"
    " status_code, error, response_excerpt) SELECT id, started_at, duration, outcome,"
    " status_code, error, excerpt FROM first WHERE n IN (SELECT n FROM settled) ORDER BY n)"
    " SELECT array(SELECT n FROM settled),"
    " EXISTS (SELECT FROM live WHERE ordering_key IS NULL),"
    " array(SELECT n FROM live WHERE ordering_key IS NOT NULL ORDER BY n),"
    " array(SELECT subscriber FROM live WHERE ordering_key IS NOT NULL ORDER BY n),"
    " array(SELECT ordering_key FROM live WHERE ordering_key IS NOT NULL ORDER BY n)"
)
# Its arrays, in the order of `unnest`'s.
_RECORD_COLUMNS = (
    "id",
    "token",
    "state",
    "next_at",
    "finished_at",
    "started_at",
    "duration",
    "outcome",
    "status_code",
    "error",
    "excerpt",
)


class FirstPass(msgspec.Struct, frozen=True):
    """What `record_unordered` did with a batch: for each record whether it applied; the
    records (by index) whose deliveries are ordered and which could apply, with their keys;
    and whether records of unordered deliveries were left for `record_ordered` too."""

    applied: list[bool]
    ordered: list[int]
    keys: list[Key]
    waiting: bool


async def record_attempts(
    db: Connection, records: Sequence[AttemptRecord], now: float | None, locked: set[int]
) -> tuple[list[bool], bool]:
    """Record attempts and move their deliveries on as decided, in the caller's transaction,
    the caller holding the key locks (`locked`) of the records' ordered deliveries; for each
    record whether it applied (fencing: only under the token that holds a pending delivery's
    lease, once per lease), and whether a held delivery was made pending."""
    first = await record_unordered(db, records, keys_locked=True)
    return await record_ordered(db, records, now, first, locked)


async def record_unordered(
    db: Connection, records: Sequence[AttemptRecord], *, keys_locked: bool
) -> FirstPass:
    """The records of a batch whose deliveries are unordered, in one statement
    (`_RECORD_UNORDERED`), settled unless ordered ones could apply too and their keys are not
    locked (`keys_locked`). On an autocommit connection the statement is its own transaction:
    when it leaves nothing (`ordered` empty), that is the batch recorded."""
    columns: dict[str, list[Any]] = {name: [] for name in _RECORD_COLUMNS}
    for record in records:
        attempt = record.attempt
        state, next_at, finished_at = state_after(
            record.decision, attempt.started_at + attempt.duration
        )
        values = (
            attempt.delivery_id,
            record.lease_token,
            state,
            next_at,
            finished_at,
            attempt.started_at,
            attempt.duration,
            attempt.outcome,
            attempt.status_code,
            attempt.error,
            attempt.response_excerpt,
        )
        for name, value in zip(_RECORD_COLUMNS, values, strict=True):
            columns[name].append(value)
    cursor = await db.execute(_RECORD_UNORDERED, {**columns, "keys_locked": keys_locked})
    answer = await cursor.fetchone()
    assert answer is not None
    settled_at, unordered_live, ordered_at, subscribers, keys = answer
    settled = {int(n) - 1 for n in settled_at}
    ordered = [int(n) - 1 for n in ordered_at]
    return FirstPass(
        applied=[index in settled for index in range(len(records))],
        ordered=ordered,
        keys=list(dict.fromkeys(zip(subscribers, keys, strict=True))),
        waiting=bool(ordered) and not keys_locked and bool(unordered_live),
    )


async def record_ordered(
    db: Connection,
    records: Sequence[AttemptRecord],
    now: float | None,
    first: FirstPass,
    locked: set[int] | None = None,
) -> tuple[list[bool], bool]:
    """What `record_unordered` left of a batch, in the caller's transaction: the ordered
    deliveries' keys locked (those not in `locked` yet), then the unordered records it held
    back, then the ordered ones (`record_under_key_locks`); for each record whether it
    applied, and whether a held delivery was made pending."""
    if not first.ordered:
        return first.applied, False
    locked = await lock_keys(db, first.keys, locked)
    if first.waiting:
        first = await record_unordered(db, records, keys_locked=True)
    applied = list(first.applied)
    done, released = await record_under_key_locks(
        db, [records[index] for index in first.ordered], now, locked
    )
    for index, ok in zip(first.ordered, done, strict=True):
        applied[index] = ok
    return applied, released


async def record_under_key_locks(
    db: Connection, records: Sequence[AttemptRecord], now: float | None, locked: set[int]
) -> tuple[list[bool], bool]:
    """`record_attempts` the general way, for ordered deliveries (it releases the next held
    one of a key): the rows locked (in id order) and read, then written, the keys in `locked`
    already. The rows are locked before they are read, so nothing changes between that read
    and the writes."""
    cursor = await db.execute(
        "SELECT id, lease_token, subscriber, ordering_key FROM deliveries"
        " WHERE id = ANY(%s) AND state = 'pending' AND lease_until IS NOT NULL"
        " ORDER BY id FOR NO KEY UPDATE",
        (sorted({record.attempt.delivery_id for record in records}),),
    )
    held: set[tuple[int, int]] = set()
    keys: dict[int, Key] = {}
    for row in await cursor.fetchall():
        held.add((int(row[0]), int(row[1])))
        if row[3] is not None:
            keys[int(row[0])] = (str(row[2]), str(row[3]))
    # A replay may have changed a key since it was locked: lock that one too.
    await lock_keys(db, list(keys.values()), locked)
    applied: list[bool] = []
    for record in records:
        lease = (record.attempt.delivery_id, record.lease_token)
        applied.append(lease in held)
        held.discard(lease)  # one record per lease
    settling = [record for record, ok in zip(records, applied, strict=True) if ok]
    if not settling:
        return applied, False
    attempts = [as_struct.attempt_values(record.attempt) for record in settling]
    await db.execute(
        "INSERT INTO attempts (delivery_id, started_at, duration, outcome, status_code, error,"
        " response_excerpt) SELECT * FROM unnest(%s::bigint[], %s::float8[], %s::float8[],"
        " %s::text[], %s::int[], %s::text[], %s::text[])",
        [list(column) for column in zip(*attempts, strict=True)],
    )
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
    for record in settling:
        attempt = record.attempt
        state, next_at, finished_at = state_after(
            record.decision, attempt.started_at + attempt.duration
        )
        row = (attempt.delivery_id, record.lease_token, state, next_at, attempt.error, finished_at)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    await db.execute(
        "UPDATE deliveries d SET state = o.state, attempts = d.attempts + 1,"
        " next_attempt_at = coalesce(o.next_at, d.next_attempt_at), lease_until = NULL,"
        " lease_owner = NULL, last_error = o.error, finished_at = o.finished_at"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::float8[], %s::text[],"
        " %s::float8[]) AS o(id, token, state, next_at, error, finished_at)"
        " WHERE d.id = o.id AND d.lease_token = o.token AND d.state = 'pending'"
        " AND d.lease_until IS NOT NULL",
        columns,
    )
    settled = [(record.attempt.delivery_id, record.decision) for record in settling]
    released = await release_next(db, released_keys(settled, keys), now)
    return applied, released > 0


async def next_due_at(db: Connection, subscribers: Sequence[str]) -> float | None:
    """When the earliest unleased pending delivery to one of `subscribers` is due."""
    # Per subscriber, the first unleased pending delivery in (subscriber, next_attempt_at):
    # a few index entries each, where a MIN over all pending rows would read every one.
    cursor = await db.execute(
        "SELECT min(first.next_attempt_at) FROM unnest(%s::text[]) AS s(name)"
        " CROSS JOIN LATERAL (SELECT next_attempt_at FROM deliveries"
        " WHERE state = 'pending' AND subscriber = s.name AND lease_until IS NULL"
        " ORDER BY next_attempt_at LIMIT 1) AS first",
        (list(subscribers),),
    )
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def redrive(
    db: Connection,
    *,
    now: float,
    subscriber: str | None,
    since: float | None,
    until: float | None,
    traceparent: str | None,
    tracestate: str | None,
) -> int:
    """Make dead deliveries pending again, or held behind their key (Store.redrive); how many."""
    cursor = await db.execute(
        "SELECT id, subscriber, ordering_key FROM deliveries WHERE state = 'dead'"
        " AND (%(subscriber)s::text IS NULL OR subscriber = %(subscriber)s)"
        " AND (%(since)s::float8 IS NULL OR finished_at >= %(since)s)"
        " AND (%(until)s::float8 IS NULL OR finished_at <= %(until)s)",
        {"subscriber": subscriber, "since": since, "until": until},
    )
    found = await cursor.fetchall()
    locked = await lock_keys(db, key_pairs(found))
    # Read again under the key locks: another redrive may have taken some meanwhile.
    cursor = await db.execute(
        "SELECT id, subscriber, ordering_key FROM deliveries"
        " WHERE id = ANY(%s) AND state = 'dead' ORDER BY id FOR NO KEY UPDATE",
        ([int(row[0]) for row in found],),
    )
    dead = await cursor.fetchall()
    await lock_keys(db, key_pairs(dead), locked)
    # In commit order: of several dead letters of one key, the first goes out, the
    # others wait behind it (and behind whatever of the key is pending already).
    busy = await busy_keys(db, key_pairs(dead))
    ids: list[int] = []
    states: list[str] = []
    for delivery_id, name, key in dead:
        ids.append(int(delivery_id))
        states.append(place(name, key, busy))
    await db.execute(
        "UPDATE deliveries d SET state = u.state, attempts = 0, next_attempt_at = %s,"
        " finished_at = NULL, lease_until = NULL, lease_owner = NULL,"
        " traceparent = %s, tracestate = %s"
        " FROM unnest(%s::bigint[], %s::text[]) AS u(id, state) WHERE d.id = u.id",
        (now, traceparent, tracestate, ids, states),
    )
    if "pending" in states:
        await db.execute(NOTIFY)
    return len(ids)


async def replay(
    db: Connection,
    event_id: str,
    subscribers: Sequence[str],
    *,
    now: float,
    ordered: Collection[str],
    traceparent: str | None,
    tracestate: str | None,
) -> int | None:
    """Deliver a stored event again to `subscribers` (Store.replay); None without the event."""
    cursor = await db.execute("SELECT source, subject FROM events WHERE id = %s", (event_id,))
    event = await cursor.fetchone()
    if event is None:
        return None
    keys = {
        subscriber: ordering_key(event[0], event[1]) if subscriber in ordered else None
        for subscriber in subscribers
    }
    await lock_keys(db, [(name, key) for name, key in keys.items() if key is not None])
    # A share lock on the event: retention skips an event being replayed.
    cursor = await db.execute("SELECT 1 FROM events WHERE id = %s FOR SHARE", (event_id,))
    if await cursor.fetchone() is None:
        return None
    made_pending = False
    for subscriber in subscribers:
        key = keys[subscriber]
        cursor = await db.execute(
            "SELECT state, ordering_key FROM deliveries WHERE event_id = %s AND subscriber = %s",
            (event_id, subscriber),
        )
        current = await cursor.fetchone()
        if current is not None and current[0] in ("pending", "held"):
            # Still waiting: it keeps its state and its place, with a fresh schedule.
            state, key = current[0], current[1]
        elif key is not None and await busy_keys(db, [(subscriber, key)]):
            state = "held"
        else:
            state = "pending"
        made_pending = made_pending or state == "pending"
        await db.execute(
            "INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at,"
            " state, ordering_key, traceparent, tracestate)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (event_id, subscriber) DO UPDATE SET"
            " state = excluded.state, attempts = 0,"
            " next_attempt_at = excluded.next_attempt_at, finished_at = NULL,"
            " lease_until = NULL, lease_owner = NULL,"
            " ordering_key = excluded.ordering_key,"
            " traceparent = excluded.traceparent, tracestate = excluded.tracestate",
            (event_id, subscriber, now, now, state, key, traceparent, tracestate),
        )
    if made_pending:
        await db.execute(NOTIFY)
    return len(subscribers)


def claim_lock(subscriber: str) -> tuple[int, int]:
    """A subscriber's claim lock: CLAIM_LOCK_CLASS and 32 bits of a hash of its name, the same
    on every node. Two names that share one only wait for each other's claims."""
    digest = hashlib.blake2b(subscriber.encode(), digest_size=4).digest()
    return CLAIM_LOCK_CLASS, int.from_bytes(digest, "big", signed=True)

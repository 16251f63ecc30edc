"""Ordered delivery across nodes (the rule: gateway/store/ordering.py).

"Is a delivery of this (subscriber, ordering key) pending or held?" must not be answered by two
nodes at once: each would see none and both deliveries would go out pending. Every transaction
that reads a key's state and then writes it (accept, the release of the next held delivery when
an attempt settles, redrive, replay) first takes `pg_advisory_xact_lock` on each of its keys
(`lock_keys`, hashed to a bigint), in ascending order so that two transactions never wait for
each other crosswise, and only then reads the state (`busy_keys`): in READ COMMITTED each
statement takes a new snapshot, so a transaction that waited for a key sees the commit of the
one it waited for. Row locks come after the key locks, each kind in id order: a transaction
never waits for a key while holding a row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from psycopg.rows import TupleRow

from gateway.store.ordering import Key
from gateway.store.postgres.connection import Connection

__all__ = ["busy_keys", "key_pairs", "lock_keys", "release_next"]


async def release_next(db: Connection, pairs: list[Key], now: float | None) -> int:
    """Make the first held delivery (in commit order: id) of each (subscriber, ordering key)
    pending, due now, unless one of that key is pending already; how many. The caller holds
    the keys' locks and settled their pending delivery in this transaction."""
    if not pairs:
        return 0
    cursor = await db.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = finrelay_now(%s)"
        " WHERE id IN (SELECT (SELECT d.id FROM deliveries d WHERE d.state = 'held'"
        " AND d.subscriber = r.s AND d.ordering_key = r.k ORDER BY d.id LIMIT 1)"
        " FROM unnest(%s::text[], %s::text[]) AS r(s, k) WHERE NOT EXISTS"
        " (SELECT 1 FROM deliveries p WHERE p.state = 'pending' AND p.subscriber = r.s"
        " AND p.ordering_key = r.k))",
        (now, [pair[0] for pair in pairs], [pair[1] for pair in pairs]),
    )
    return cursor.rowcount


async def busy_keys(db: Connection, pairs: list[Key]) -> set[Key]:
    """Those of `pairs` (subscriber, ordering key) with a delivery pending or held: an index
    seek per pair and state (deliveries_ordered, deliveries_held)."""
    if not pairs:
        return set()
    cursor = await db.execute(
        "SELECT w.s, w.k FROM unnest(%s::text[], %s::text[]) AS w(s, k)"
        " WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.state = 'pending'"
        " AND d.subscriber = w.s AND d.ordering_key = w.k)"
        " OR EXISTS (SELECT 1 FROM deliveries d WHERE d.state = 'held'"
        " AND d.subscriber = w.s AND d.ordering_key = w.k)",
        ([pair[0] for pair in pairs], [pair[1] for pair in pairs]),
    )
    return {(str(row[0]), str(row[1])) for row in await cursor.fetchall()}


async def lock_keys(
    db: Connection, pairs: Iterable[Key], already: set[int] | None = None
) -> set[int]:
    """Take the transaction's advisory lock of each (subscriber, ordering key) not in
    `already`, in ascending order (unnest hands them to the function in the array's order);
    every key now locked."""
    locked = set(already or ())
    wanted = sorted({_key_lock(subscriber, key) for subscriber, key in pairs} - locked)
    if wanted:
        await db.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k", (wanted,)
        )
    return locked | set(wanted)


def _key_lock(subscriber: str, key: str) -> int:
    """An ordering key's advisory lock: 64 bits of a hash of (subscriber, key), the same on
    every node (Python's own hash() is not)."""
    digest = hashlib.blake2b(f"{subscriber}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def key_pairs(rows: Iterable[TupleRow]) -> list[Key]:
    """(subscriber, ordering key) of (id, subscriber, ordering_key) rows that have a key."""
    return list(dict.fromkeys((str(row[1]), str(row[2])) for row in rows if row[2] is not None))

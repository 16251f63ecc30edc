"""Retention on PostgreSQL: one short transaction at a time, from the oldest events and the
oldest quarantined payloads."""

from __future__ import annotations

from gateway.store.base import Purged
from gateway.store.postgres.connection import Connection

__all__ = ["purge_expired"]


async def purge_expired(db: Connection, *, before: float, after: float, limit: int) -> Purged:
    """Store.purge_expired, in the caller's transaction."""
    # The oldest events first. Locked (SKIP LOCKED: never waiting) so that no replay
    # makes one of them pending between the look below and the delete; one being
    # replayed is passed over, and kept.
    cursor = await db.execute(
        "SELECT id, received_at FROM events"
        " WHERE received_at > %s AND received_at < %s"
        " ORDER BY received_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (after, before, limit),
    )
    rows = await cursor.fetchall()
    cursor = await db.execute(
        "SELECT e.id FROM unnest(%s::text[]) AS e(id) WHERE NOT EXISTS"
        " (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
        " AND d.state <> 'delivered')",
        ([row[0] for row in rows],),
    )
    expired = [str(row[0]) for row in await cursor.fetchall()]
    if expired:
        await db.execute(
            "DELETE FROM attempts WHERE delivery_id IN"
            " (SELECT id FROM deliveries WHERE event_id = ANY(%s))",
            (expired,),
        )
        await db.execute("DELETE FROM deliveries WHERE event_id = ANY(%s)", (expired,))
        await db.execute("DELETE FROM events WHERE id = ANY(%s)", (expired,))
    cursor = await db.execute(
        "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
        " WHERE released_as IS NOT NULL ORDER BY released_at LIMIT %s)",
        (limit,),
    )
    released = cursor.rowcount
    cursor = await db.execute(
        "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
        " WHERE released_as IS NULL AND received_at < %s"
        " ORDER BY received_at LIMIT %s)",
        (before, max(0, limit - released)),
    )
    stale = cursor.rowcount
    return Purged(
        events=len(expired),
        quarantined=released + stale,
        scanned_to=float(rows[-1][1]) if len(rows) == limit else None,
    )

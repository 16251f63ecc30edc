"""What every node's dispatchers share per subscriber, on PostgreSQL: circuit-breaker states
(compare and set on a version, so that two nodes never both take a probe) and operators'
pauses. Single statements on a pooled connection."""

from __future__ import annotations

from gateway.store.postgres.connection import Connection

__all__ = ["paused_subscribers", "save_subscriber_circuit", "set_paused", "subscriber_circuits"]


async def subscriber_circuits(db: Connection) -> dict[str, tuple[int, bytes]]:
    cursor = await db.execute("SELECT subscriber, version, state FROM subscriber_circuits")
    rows = await cursor.fetchall()
    return {str(row[0]): (int(row[1]), bytes(row[2])) for row in rows}


async def save_subscriber_circuit(
    db: Connection,
    subscriber: str,
    state: bytes,
    *,
    expected_version: int | None,
    now: float | None,
) -> bool:
    """Store.save_subscriber_circuit: whether the state was kept."""
    values = {
        "subscriber": subscriber,
        "state": state,
        "now": now,
        "expected": expected_version,
    }
    if expected_version is None:
        await db.execute(
            "INSERT INTO subscriber_circuits (subscriber, state, updated_at, version)"
            " VALUES (%(subscriber)s, %(state)s, finrelay_now(%(now)s), 1)"
            " ON CONFLICT (subscriber) DO UPDATE SET state = excluded.state,"
            " updated_at = excluded.updated_at,"
            " version = subscriber_circuits.version + 1",
            values,
        )
        return True
    if expected_version == 0:
        cursor = await db.execute(
            "INSERT INTO subscriber_circuits (subscriber, state, updated_at, version)"
            " VALUES (%(subscriber)s, %(state)s, finrelay_now(%(now)s), 1)"
            " ON CONFLICT (subscriber) DO NOTHING",
            values,
        )
    else:
        cursor = await db.execute(
            "UPDATE subscriber_circuits SET state = %(state)s,"
            " updated_at = finrelay_now(%(now)s), version = version + 1"
            " WHERE subscriber = %(subscriber)s AND version = %(expected)s",
            values,
        )
    return cursor.rowcount == 1


async def paused_subscribers(db: Connection) -> set[str]:
    cursor = await db.execute("SELECT subscriber FROM subscriber_pauses")
    return {str(row[0]) for row in await cursor.fetchall()}


async def set_paused(db: Connection, subscriber: str, paused: bool, *, now: float | None) -> None:
    if paused:
        await db.execute(
            "INSERT INTO subscriber_pauses (subscriber, paused_at)"
            " VALUES (%s, finrelay_now(%s)) ON CONFLICT (subscriber) DO NOTHING",
            (subscriber, now),
        )
    else:
        await db.execute("DELETE FROM subscriber_pauses WHERE subscriber = %s", (subscriber,))

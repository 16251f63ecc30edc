"""Operators' and metrics' reads on PostgreSQL: short reads on pooled connections, never in the
writer's way. Pages walk a keyset, never an OFFSET."""

from __future__ import annotations

from typing import Any, LiteralString

from psycopg import sql

from gateway.store import rows as as_struct
from gateway.store.base import (
    Backlog,
    DeadLetter,
    DeliveryState,
    EventFilter,
    EventRecord,
    EventRow,
)
from gateway.store.postgres.connection import Connection
from gateway.store.postgres.glob import regex_or_none

__all__ = [
    "dead_counts",
    "dead_letter_page",
    "delivery_backlog",
    "event_record",
    "event_subscribers",
    "search_events",
    "stats",
]


async def event_subscribers(db: Connection, event_id: str) -> list[str]:
    cursor = await db.execute(
        "SELECT subscriber FROM deliveries WHERE event_id = %s ORDER BY id", (event_id,)
    )
    return [str(row[0]) for row in await cursor.fetchall()]


async def delivery_backlog(db: Connection) -> dict[str, Backlog]:
    # Two partial indexes, one per state: never a walk of the delivered rows.
    cursor = await db.execute(
        "SELECT subscriber, count(*), 0, min(created_at) FROM deliveries"
        " WHERE state = 'pending' GROUP BY subscriber"
        " UNION ALL SELECT subscriber, count(*), count(*), min(created_at)"
        " FROM deliveries WHERE state = 'held' GROUP BY subscriber"
    )
    rows = await cursor.fetchall()
    totals: dict[str, tuple[int, int, float]] = {}
    for name, count, held, oldest in rows:
        before = totals.get(name, (0, 0, float("inf")))
        totals[name] = (before[0] + count, before[1] + held, min(before[2], float(oldest)))
    return {
        name: Backlog(count=count, held=held, oldest_created_at=oldest)
        for name, (count, held, oldest) in totals.items()
    }


async def search_events(
    db: Connection, filters: EventFilter, *, after: tuple[float, str] | None, limit: int
) -> list[EventRow]:
    conditions: list[sql.Composable] = []
    values: dict[str, Any] = {"limit": limit}
    candidates: tuple[tuple[LiteralString, str, Any], ...] = (
        ("source = %(source)s", "source", filters.source),
        ("type ~ %(type_re)s", "type_re", regex_or_none(filters.type_glob)),
        ("subject = %(subject)s", "subject", filters.subject),
        ("status = %(status)s", "status", filters.status),
        ("received_at >= %(since)s", "since", filters.since),
        ("received_at < %(until)s", "until", filters.until),
    )
    for condition, name, value in candidates:
        if value is not None:
            conditions.append(sql.SQL(condition))
            values[name] = value
    if after is not None:
        # The keyset: strictly past the previous page's last item in (received_at, id).
        conditions.append(sql.SQL("(received_at, id) < (%(after_at)s, %(after_id)s)"))
        values["after_at"], values["after_id"] = after
    where = sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")
    query = sql.SQL(
        "SELECT id, source, type, subject, received_at, body FROM events WHERE {}"
        " ORDER BY received_at DESC, id DESC LIMIT %(limit)s"
    ).format(where)
    cursor = await db.execute(query, values)
    rows = await cursor.fetchall()
    cursor = await db.execute(
        "SELECT event_id, subscriber, state FROM deliveries WHERE event_id = ANY(%s) ORDER BY id",
        ([row[0] for row in rows],),
    )
    states: dict[str, dict[str, DeliveryState]] = {row[0]: {} for row in rows}
    for event_id, subscriber, state in await cursor.fetchall():
        states[event_id][subscriber] = state
    return [as_struct.event_row(row, states[row[0]]) for row in rows]


async def event_record(db: Connection, event_id: str) -> EventRecord | None:
    cursor = await db.execute("SELECT received_at, body FROM events WHERE id = %s", (event_id,))
    event = await cursor.fetchone()
    if event is None:
        return None
    cursor = await db.execute(
        "SELECT id, subscriber, state, next_attempt_at FROM deliveries"
        " WHERE event_id = %s ORDER BY id",
        (event_id,),
    )
    deliveries = await cursor.fetchall()
    cursor = await db.execute(
        "SELECT a.delivery_id, a.started_at, a.duration, a.outcome, a.status_code,"
        " a.error, a.response_excerpt FROM attempts a"
        " JOIN deliveries d ON d.id = a.delivery_id WHERE d.event_id = %s ORDER BY a.id",
        (event_id,),
    )
    attempts = await cursor.fetchall()
    return as_struct.event_record(event_id, event, deliveries, attempts)


async def dead_letter_page(
    db: Connection, *, subscriber: str | None, after: tuple[float, int] | None, limit: int
) -> list[DeadLetter]:
    dead_at, delivery_id = after if after is not None else (None, None)
    cursor = await db.execute(
        # Every attempt recorded, as the event's page lists them: the `attempts`
        # column counts only those since the last redrive or replay.
        "SELECT d.id, d.event_id, d.subscriber,"
        " (SELECT count(*) FROM attempts a WHERE a.delivery_id = d.id),"
        " d.last_error, d.finished_at"
        " FROM deliveries d WHERE d.state = 'dead'"
        " AND (%(subscriber)s::text IS NULL OR d.subscriber = %(subscriber)s)"
        " AND (%(dead_at)s::float8 IS NULL"
        " OR (d.finished_at, d.id) < (%(dead_at)s::float8, %(id)s::bigint))"
        " ORDER BY d.finished_at DESC, d.id DESC LIMIT %(limit)s",
        {"subscriber": subscriber, "dead_at": dead_at, "id": delivery_id, "limit": limit},
    )
    rows = await cursor.fetchall()
    return [as_struct.dead_letter(row) for row in rows]


async def dead_counts(db: Connection) -> dict[str, int]:
    cursor = await db.execute(
        "SELECT subscriber, count(*) FROM deliveries WHERE state = 'dead' GROUP BY subscriber"
    )
    return {str(row[0]): int(row[1]) for row in await cursor.fetchall()}


async def stats(db: Connection) -> dict[str, int]:
    cursor = await db.execute(
        "SELECT (SELECT count(*) FROM events),"
        " (SELECT count(*) FROM quarantine WHERE released_as IS NULL)"
    )
    totals = await cursor.fetchone()
    cursor = await db.execute("SELECT state, count(*) FROM deliveries GROUP BY state")
    by_state = await cursor.fetchall()
    assert totals is not None
    counts = {"events": int(totals[0])}
    counts.update(dict.fromkeys(("pending", "held", "delivered", "dead"), 0))
    counts.update({str(state): int(count) for state, count in by_state})
    counts["quarantined"] = int(totals[1])
    return counts

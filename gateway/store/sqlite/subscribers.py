"""What every dispatcher shares per subscriber, on SQLite: circuit-breaker states (compare and
set on a version, so that two processes never both take a probe) and operators' pauses."""

from __future__ import annotations

import sqlite3

__all__ = ["paused_subscribers", "save_subscriber_circuit", "set_paused", "subscriber_circuits"]


def subscriber_circuits(db: sqlite3.Connection) -> dict[str, tuple[int, bytes]]:
    rows = db.execute("SELECT subscriber, version, state FROM subscriber_circuits").fetchall()
    return {row[0]: (int(row[1]), bytes(row[2])) for row in rows}


def save_subscriber_circuit(
    db: sqlite3.Connection,
    subscriber: str,
    state: bytes,
    *,
    expected_version: int | None,
    now: float,
) -> bool:
    """Store.save_subscriber_circuit: whether the state was kept."""
    if expected_version is None:
        db.execute(
            "INSERT INTO subscriber_circuits (subscriber, state, updated_at, version)"
            " VALUES (?, ?, ?, 1) ON CONFLICT (subscriber) DO UPDATE SET"
            " state = excluded.state, updated_at = excluded.updated_at,"
            " version = version + 1",
            (subscriber, state, now),
        )
        return True
    if expected_version == 0:
        cursor = db.execute(
            "INSERT INTO subscriber_circuits (subscriber, state, updated_at, version)"
            " VALUES (?, ?, ?, 1) ON CONFLICT (subscriber) DO NOTHING",
            (subscriber, state, now),
        )
    else:
        cursor = db.execute(
            "UPDATE subscriber_circuits SET state = ?, updated_at = ?,"
            " version = version + 1 WHERE subscriber = ? AND version = ?",
            (state, now, subscriber, expected_version),
        )
    return cursor.rowcount == 1


def paused_subscribers(db: sqlite3.Connection) -> set[str]:
    rows = db.execute("SELECT subscriber FROM subscriber_pauses").fetchall()
    return {str(row[0]) for row in rows}


def set_paused(db: sqlite3.Connection, subscriber: str, paused: bool, *, now: float) -> None:
    if paused:
        db.execute(
            "INSERT INTO subscriber_pauses (subscriber, paused_at) VALUES (?, ?)"
            " ON CONFLICT (subscriber) DO NOTHING",
            (subscriber, now),
        )
    else:
        db.execute("DELETE FROM subscriber_pauses WHERE subscriber = ?", (subscriber,))

"""Set-based statements under SQLite's variable limit: a batch of rows becomes a few statements,
each one `sqlite3_step`, however many rows it carries.

The writer thread waits for the GIL after every step: a statement per row would hand the GIL
back and forth with the event loop once per row."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

__all__ = ["chunks", "insert_rows"]


def insert_rows(db: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    """One multi-row INSERT per chunk of rows (a single step each)."""
    for chunk in chunks(db, rows):
        marks = ",".join(["(" + ",".join("?" * len(chunk[0])) + ")"] * len(chunk))
        db.execute(
            f"INSERT INTO {table} VALUES {marks}",  # noqa: S608 - our table names, "?" marks
            [value for row in chunk for value in row],
        )


def chunks(
    db: sqlite3.Connection, rows: list[tuple[Any, ...]], reserved: int = 0
) -> Iterator[list[tuple[Any, ...]]]:
    """`rows` in runs whose parameters (and `reserved` others) fit in one statement (SQLite's
    variable limit)."""
    if not rows:
        return
    room = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - reserved
    per_statement = max(1, room // len(rows[0]))
    for start in range(0, len(rows), per_statement):
        yield rows[start : start + per_statement]

"""The SQLite database file: how it is opened (owner-only mode, WAL, synchronous=FULL), its
schema, and the upgrade of a file an older gateway made. The version is the file's
`PRAGMA user_version`; a file newer than this gateway knows is refused (StoreSchemaError)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from gateway.store.base import StoreSchemaError

__all__ = ["SCHEMA_VERSION", "bring_up_to_date", "connect"]

# 2: fencing tokens on deliveries, versioned circuits, dispatcher heartbeats (`_upgrade`).
# 3: ordered delivery per subject: events' subject, deliveries' ordering key, the `held` state.
# 4: operators (gateway/operations/): events' data.status, a subject index, paused subscribers.
# 5: claims bound each subscriber's live leases by its max_in_flight, for every process together
#    (`deliveries_leased`, which SCHEMA adds to an older database). A version too: a gateway
#    of version 4 would claim past the bound beside this one's processes, and refuses a file
#    at version 5 instead.
# 6: replayed and redriven deliveries keep the trace their operation started (`traceparent`,
#    `tracestate`: docs/reference/traces.md), which a gateway of version 5 would not send.
SCHEMA_VERSION = 6
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    type        TEXT NOT NULL,
    received_at REAL NOT NULL,
    body        BLOB NOT NULL,
    subject     TEXT,
    status      TEXT
);
CREATE TABLE IF NOT EXISTS deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events(id),
    subscriber      TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_until     REAL,
    lease_owner     TEXT,
    lease_token     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    finished_at     REAL,
    ordering_key    TEXT,
    traceparent     TEXT,
    tracestate      TEXT,
    UNIQUE (event_id, subscriber)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (finished_at)
    WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS attempts (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER NOT NULL REFERENCES deliveries(id),
    started_at       REAL NOT NULL,
    duration         REAL NOT NULL,
    outcome          TEXT NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_delivery ON attempts (delivery_id);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (subscriber, next_attempt_at)
    WHERE state = 'pending';
-- A claim counts the subscriber's live leases (its sends under way): a range of this, which
-- holds the leased rows only (about max_in_flight per subscriber), however long the backlog.
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (subscriber, lease_until)
    WHERE state = 'pending' AND lease_until IS NOT NULL;
CREATE TABLE IF NOT EXISTS subscriber_circuits (
    subscriber TEXT PRIMARY KEY,
    state      BLOB NOT NULL,
    updated_at REAL NOT NULL,
    version    INTEGER NOT NULL DEFAULT 1
);
-- Subscribers an operator paused: every dispatcher reads this with the circuits.
CREATE TABLE IF NOT EXISTS subscriber_pauses (
    subscriber TEXT PRIMARY KEY,
    paused_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dispatcher_heartbeats (
    owner   TEXT PRIMARY KEY,
    beat_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id           INTEGER PRIMARY KEY,
    source       TEXT NOT NULL,
    received_at  REAL NOT NULL,
    body         BLOB NOT NULL,
    headers      TEXT NOT NULL,
    verification TEXT NOT NULL,
    error        TEXT NOT NULL,
    released_as  TEXT,
    released_at  REAL
);
-- Retention (`purge_expired`) walks these from the oldest: it never scans a table.
CREATE INDEX IF NOT EXISTS events_received ON events (received_at);
CREATE INDEX IF NOT EXISTS quarantine_waiting ON quarantine (received_at)
    WHERE released_as IS NULL;
CREATE INDEX IF NOT EXISTS quarantine_released ON quarantine (released_at)
    WHERE released_as IS NOT NULL;
"""
# Ordered delivery (docs/reference/ordering.md), on columns `_upgrade` may have just added. An
# ordering key is `<source>/<subject>`, set only on deliveries to ordered subscribers. Claims read
# only `pending` rows (deliveries_pending), so held ones cost a claim nothing however many wait;
# these two answer "is a delivery of this key pending?" and "which held one is next?" with one index
# seek each.
ORDERING_SCHEMA = """
CREATE INDEX IF NOT EXISTS deliveries_ordered ON deliveries (subscriber, ordering_key)
    WHERE state = 'pending' AND ordering_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_held ON deliveries (subscriber, ordering_key, id)
    WHERE state = 'held';
"""
# Operators look an event up by its subject (a payment id a ledger misses): newest first within
# one subject is one index range. Other filters walk `events_received` from the newest event.
OPERATOR_SCHEMA = """
CREATE INDEX IF NOT EXISTS events_subject ON events (subject, received_at)
    WHERE subject IS NOT NULL;
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the database at `path` (created, owner only, when there is none)."""
    # Created here, not by SQLite (0644 less the umask): owner only. SQLite gives the -wal
    # and -shm files the database's own mode.
    # Only when it does not exist yet (O_EXCL): closing any descriptor of the database drops
    # every POSIX lock this process holds on it, its SQLite connections' included, and
    # another process's connection then deletes the WAL from under them (later commits
    # become invisible to every other process).
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    # FULL: the WAL is fsync'd at every commit, so a commit that returned survives power loss.
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=10000")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def bring_up_to_date(connection: sqlite3.Connection, path: Path) -> None:
    """Create or upgrade the schema of the database at `path` that `connection` is open on;
    StoreSchemaError when it is newer than this gateway knows. The caller holds the writers'
    lock: no other process migrates meanwhile."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreSchemaError(
            f"{path} has schema version {version}, newer than this gateway's"
            f" {SCHEMA_VERSION}: run the newer gateway, or restore a backup"
        )
    connection.executescript(SCHEMA)
    _upgrade(connection, version)
    connection.executescript(ORDERING_SCHEMA)
    connection.executescript(OPERATOR_SCHEMA)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _upgrade(db: sqlite3.Connection, version: int) -> None:
    """Add what SCHEMA's `CREATE ... IF NOT EXISTS` cannot to a database an older gateway made
    (`version` is its user_version; 0 is a new database, which SCHEMA made whole)."""
    if version == 0:
        return
    if version < 2:
        db.execute("ALTER TABLE deliveries ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0")
        db.execute("ALTER TABLE subscriber_circuits ADD COLUMN version INTEGER NOT NULL DEFAULT 1")
    if version < 3:
        # Older events have no subject recorded (NULL: never held), nor their deliveries a key.
        # A table SCHEMA has just created (missing from the old database) has them already.
        _add_column(db, "events", "subject TEXT")
        _add_column(db, "deliveries", "ordering_key TEXT")
    if version < 4:
        # Older events' data.status is not in a column: a status filter passes them over.
        _add_column(db, "events", "status TEXT")
    if version < 6:
        # Deliveries made before have no trace of their own: they continue their event's.
        _add_column(db, "deliveries", "traceparent TEXT")
        _add_column(db, "deliveries", "tracestate TEXT")


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    name = column.split()[0]
    if all(row[1] != name for row in db.execute(f"PRAGMA table_info({table})")):
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

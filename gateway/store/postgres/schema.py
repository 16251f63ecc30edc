"""The PostgreSQL store's schema: an ordered list of versioned migrations, and how they run.

Version 1 is the whole schema of the first PostgreSQL store (SQLite's version 4, translated):
BIGINT identity ids, `double precision` unix times (the interface's floats, compared as
numbers), `bytea` bodies, and the same partial indexes. Version 2 is SQLite's version 5: the
index claims count a subscriber's live leases by; version 3 is SQLite's 6, deliveries' traces.
A later change is a new `Migration` at the end of `MIGRATIONS`, never an edit of one that has
shipped: databases already at its version never run it again.

`finrelay_schema` holds the version a database is at. Nodes starting together must not migrate
at the same time, so `migrate` holds a session advisory lock (SCHEMA_LOCK, on one connection of
its own) while it reads the version and applies what is missing, each migration in its own
transaction with the version it reaches: a node killed halfway leaves a database at a whole
version, which the next node carries on from. The others wait on the lock, unbounded (the app
answers 503 on /readyz meanwhile), and then find nothing left to do. A database at a version
newer than this gateway knows is refused (`StoreSchemaError`): an older node must not write to
tables whose meaning it does not know.
"""

from __future__ import annotations

import contextlib

import msgspec
import psycopg
from psycopg.rows import TupleRow

from gateway.store.base import StoreSchemaError

__all__ = ["MIGRATIONS", "SCHEMA_LOCK", "SCHEMA_VERSION", "Migration", "migrate"]


class Migration(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    what: str
    sql: str


# Event ids and ordering keys compare byte by byte (COLLATE "C"), as SQLite compares them: the
# keyset pages and "commit order" must not depend on the cluster's locale.
_VERSION_1 = """
-- "Now" for leases, heartbeats, circuits and releases: the store's own clock when it passes one
-- (tests move theirs by hand), else the database server's, the one clock every node shares.
-- statement_timestamp() is fixed for a statement: every row of a claim is judged by one "now".
CREATE FUNCTION finrelay_now(given double precision) RETURNS double precision
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(given, extract(epoch FROM statement_timestamp())::double precision) $$;
CREATE TABLE events (
    id          text COLLATE "C" PRIMARY KEY,
    source      text NOT NULL,
    type        text NOT NULL,
    received_at double precision NOT NULL,
    body        bytea NOT NULL,
    subject     text,
    status      text
);
CREATE TABLE deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        text COLLATE "C" NOT NULL REFERENCES events (id),
    subscriber      text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'held', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    created_at      double precision NOT NULL,
    next_attempt_at double precision NOT NULL,
    lease_until     double precision,
    lease_owner     text,
    lease_token     bigint NOT NULL DEFAULT 0,
    last_error      text,
    finished_at     double precision,
    ordering_key    text COLLATE "C",
    UNIQUE (event_id, subscriber)
);
-- Claims walk this per subscriber, oldest due first; held and finished rows are not in it.
CREATE INDEX deliveries_pending ON deliveries (subscriber, next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (finished_at, id) WHERE state = 'dead';
-- Ordered delivery: "is a delivery of this key pending?" and "which held one is next?".
CREATE INDEX deliveries_ordered ON deliveries (subscriber, ordering_key)
    WHERE state = 'pending' AND ordering_key IS NOT NULL;
CREATE INDEX deliveries_held ON deliveries (subscriber, ordering_key, id)
    WHERE state = 'held';
CREATE TABLE attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id      bigint NOT NULL REFERENCES deliveries (id),
    started_at       double precision NOT NULL,
    duration         double precision NOT NULL,
    outcome          text NOT NULL,
    status_code      integer,
    error            text,
    response_excerpt text
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id);
CREATE TABLE subscriber_circuits (
    subscriber text PRIMARY KEY,
    state      bytea NOT NULL,
    updated_at double precision NOT NULL,
    version    bigint NOT NULL DEFAULT 1
);
CREATE TABLE subscriber_pauses (
    subscriber text PRIMARY KEY,
    paused_at  double precision NOT NULL
);
CREATE TABLE dispatcher_heartbeats (
    owner   text PRIMARY KEY,
    beat_at double precision NOT NULL
);
CREATE TABLE quarantine (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text NOT NULL,
    received_at  double precision NOT NULL,
    body         bytea NOT NULL,
    headers      text NOT NULL,
    verification text NOT NULL,
    error        text NOT NULL,
    released_as  text,
    released_at  double precision
);
-- Retention walks these from the oldest; operators' searches from the newest.
CREATE INDEX events_received ON events (received_at, id);
CREATE INDEX events_subject ON events (subject, received_at, id) WHERE subject IS NOT NULL;
CREATE INDEX quarantine_waiting ON quarantine (received_at) WHERE released_as IS NULL;
CREATE INDEX quarantine_released ON quarantine (released_at) WHERE released_as IS NOT NULL;
"""

# Claims bound a subscriber's live leases by its max_in_flight, for every node together, and
# count them on each claim: a range of this index, which holds the leased rows only (about
# max_in_flight per subscriber), never a walk of the pending backlog. Built in the migration's
# transaction (no CONCURRENTLY there): one pass over `deliveries`, writes waiting meanwhile.
# A version too: a node of version 1 would claim past the bound beside the new ones, and on a
# database at version 2 it refuses to start instead.
_VERSION_2 = """
CREATE INDEX deliveries_leased ON deliveries (subscriber, lease_until)
    WHERE state = 'pending' AND lease_until IS NOT NULL;
"""

# SQLite's version 6: a replayed or redriven delivery keeps the trace its operation started
# (docs/reference/traces.md); NULL, as every delivery made before has, continues the event's own
# trace. Adding nullable columns without a default rewrites nothing: instant on any table size.
_VERSION_3 = """
ALTER TABLE deliveries ADD COLUMN traceparent text, ADD COLUMN tracestate text;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(version=1, what="events, deliveries, attempts, circuits, quarantine", sql=_VERSION_1),
    Migration(version=2, what="the live-lease index max_in_flight is counted by", sql=_VERSION_2),
    Migration(version=3, what="the trace of a replayed or redriven delivery", sql=_VERSION_3),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

# pg_advisory_lock's two-int form: a key space of its own, apart from the bigint keys the store
# takes per ordering key (PostgreSQL documents that the two never overlap). 0x66696e72: "finr".
SCHEMA_LOCK = (0x66696E72, 1)

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS finrelay_schema (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version  integer NOT NULL
)
"""


async def schema_version(connection: psycopg.AsyncConnection[TupleRow]) -> int:
    """The version the database is at (0: no schema yet)."""
    cursor = await connection.execute("SELECT to_regclass('finrelay_schema') IS NOT NULL")
    row = await cursor.fetchone()
    if row is None or not row[0]:
        return 0
    cursor = await connection.execute("SELECT version FROM finrelay_schema")
    found = await cursor.fetchone()
    return 0 if found is None else int(found[0])


async def migrate(
    connection: psycopg.AsyncConnection[TupleRow], *, where: str = "the database"
) -> tuple[int, int]:
    """Bring the database to SCHEMA_VERSION under the schema lock; (from, to) versions.
    `connection` must be in autocommit mode and is the lock's holder: the caller's own, not a
    pooled one. `where` names the database in a refusal (never its URL)."""
    await connection.execute("SELECT pg_advisory_lock(%s, %s)", SCHEMA_LOCK)
    try:
        found = await schema_version(connection)
        if found > SCHEMA_VERSION:
            raise StoreSchemaError(
                f"{where} has schema version {found}, newer than this gateway's"
                f" {SCHEMA_VERSION}: run the newer gateway, or restore a backup"
            )
        for migration in MIGRATIONS:
            if migration.version <= found:
                continue
            async with connection.transaction():
                await connection.execute(_VERSION_TABLE)
                await connection.execute(migration.sql.encode())
                await connection.execute(
                    "INSERT INTO finrelay_schema (version) VALUES (%s)"
                    " ON CONFLICT (only_row) DO UPDATE SET version = excluded.version",
                    (migration.version,),
                )
        return found, max(found, SCHEMA_VERSION)
    finally:
        # A lost connection has let go of the lock already; its error is the one to raise.
        with contextlib.suppress(psycopg.Error):
            await connection.execute("SELECT pg_advisory_unlock(%s, %s)", SCHEMA_LOCK)

"""The shared store: PostgreSQL, for several gateway nodes on one database (CONTRACT.md 7).

Every node runs the same code against the same tables, so every rule the SQLite store keeps
inside one writer must hold here between processes on different hosts:

- **Ingest with group commit.** `accept` and `record_attempt` go to a `GroupCommit`: one task
  per node drains what is waiting into one transaction and one WAL flush. `INSERT ... ON
  CONFLICT (id) DO NOTHING RETURNING id` decides accepted or duplicate, also between nodes
  (the primary key waits for the other's commit); a second copy in one batch is a duplicate of
  the first. Events are inserted in id order, so two nodes' batches never wait on each other's
  rows crosswise (no deadlock).
- **Ordering across nodes.** "Is a delivery of this (subscriber, ordering key) pending or
  held?" must not be answered by two nodes at once: each would see none and both deliveries
  would go out pending. Every transaction that reads a key's state and then writes it (accept,
  the release of the next held delivery when an attempt settles, redrive, replay) first takes
  `pg_advisory_xact_lock` on each of its keys (hashed to a bigint), in ascending order so that
  two transactions never wait for each other crosswise, and only then reads the state: in READ
  COMMITTED each statement takes a new snapshot, so a transaction that waited for a key sees
  the commit of the one it waited for. Row locks come after the key locks, each kind in id
  order: a transaction never waits for a key while holding a row.
- **Claims** are one short transaction: the subscriber's claim lock (`pg_advisory_xact_lock`
  on a key of its name), its live leases counted (`max_in_flight` bounds them for every node
  together: two nodes must not both see the same free slots), then one statement: `FOR NO KEY
  UPDATE SKIP LOCKED` picks due, unleased rows nobody else is claiming, `lease_token + 1` is
  the new fencing token, and the event's body comes back in the same round trip. Nothing else
  takes a claim lock, and a claim waits for no row, so claims never deadlock. No connection is
  held between calls: a send holds none.
- **Clock.** "Now" is the database server's clock (`finrelay_now`, the statement's timestamp),
  the one clock every node shares, read in the statement that uses it: no offset to measure or
  drift. A store given a `clock` (tests) passes its value instead, for every "now".
- **Wake-ups.** A transaction that makes a delivery pending notifies `finrelay_deliveries`
  (PostgreSQL folds a transaction's identical notifications into one); one LISTEN connection
  per store, outside the pool, calls the `watch_new_deliveries` callbacks, and reconnects with
  a bounded backoff. The dispatcher's poll is the fallback.
- **Bounded.** A small pool, connect, pool-wait and statement timeouts, TCP keepalives: with
  PostgreSQL down every call raises StoreUnavailable within seconds, and the pool reconnects
  by itself when it is back (a connection is checked when taken).
- **Secrets.** The URL goes to libpq as it is (sslmode, percent-encoded passwords, PGPASSWORD);
  no error, log line or repr of this module carries it: they name host:port/database, and any
  password text that ever shows in a driver's message is blotted out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from typing import Any, LiteralString
from urllib.parse import quote

import msgspec
import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.delivery.decide import Decision, Delivered, RetryAt
from gateway.store import rows as as_struct
from gateway.store.base import (
    AcceptOutcome,
    Attempt,
    Backlog,
    Claim,
    DeadLetter,
    DeliveryState,
    EventFilter,
    EventRecord,
    EventRow,
    NewEvent,
    Purged,
    QuarantinedPayload,
    Store,
    StoreUnavailable,
    ordering_key,
    released_as,
)
from gateway.store.group_commit import GroupCommit
from gateway.store.postgres_schema import SCHEMA_VERSION, migrate

__all__ = ["PostgresStore", "glob_to_regex"]

log = structlog.get_logger("gateway.store")

Connection = psycopg.AsyncConnection[TupleRow]

# Ingest writes waiting for the writer: past this, 503 (as SQLite's MAX_PENDING_WRITES).
MAX_PENDING_WRITES = 20_000
# Writes per transaction: enough to share a WAL flush widely, few enough to answer promptly.
MAX_BATCH = 1_000
# Connections per store: the writer, claims, heartbeats and operators' reads share them, and
# none is held during a send. Several nodes times this must fit the server's max_connections.
POOL_SIZE = 10
# How long a call waits for a connection (PostgreSQL down: the pool cannot make one).
POOL_WAIT_SECONDS = 3.0
# How long one series of the pool's reconnection attempts goes on (see `open`).
RECONNECT_SECONDS = 5.0
# libpq's connect_timeout and TCP settings, unless the URL sets its own.
CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    # Sent data unacknowledged this long (ms): the server is gone, whatever TCP would wait.
    "tcp_user_timeout": "15000",
    "application_name": "finrelay",
}
# A statement that runs longer is cancelled (a lock nobody lets go, a disk that does not
# answer): the caller gets StoreUnavailable instead of waiting. Key locks are held for one
# short transaction, so a wait this long means something is wrong.
STATEMENT_TIMEOUT = "10s"
# A node that stops in the middle of a transaction must not hold its key locks for ever.
IDLE_IN_TRANSACTION_TIMEOUT = "30s"
PING_SECONDS = 2.0
CHANNEL = "finrelay_deliveries"
LISTEN_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)

_NOTIFY: LiteralString = "SELECT pg_notify('finrelay_deliveries', '')"
# Give back an owner's leases: its rows locked in id order, as every transaction locks rows
# (module docstring), so this never deadlocks with an attempt record.
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
    " d.next_attempt_at, d.lease_token, e.body, e.source, e.type"
)
# pg_advisory_xact_lock's two-int form, as the schema lock (postgres_schema.SCHEMA_LOCK): a
# class of keys of its own, one per subscriber, apart from the ordering keys' bigints.
# 0x636c6169: "clai".
CLAIM_LOCK_CLASS = 0x636C6169


class _Unreachable(StoreUnavailable):
    """The database cannot be reached (down, the network, no connection to be had)."""


class _AttemptRecord(msgspec.Struct, frozen=True):
    attempt: Attempt
    decision: Decision
    lease_token: int


class PostgresStore(Store):
    schema_version = SCHEMA_VERSION

    def __init__(self, url: str, *, clock: Callable[[], float] | None = None) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as error:
            # libpq's words, with whatever of the URL they quote blotted out.
            reason = " ".join(str(error).replace(url, "<url>").split())
            for secret in _secrets_of(url, {}):
                reason = reason.replace(secret, "***")
            raise ValueError(f"invalid PostgreSQL URL: {reason}") from None
        defaults = {key: value for key, value in CONNECTION_DEFAULTS.items() if key not in params}
        if "PGCONNECT_TIMEOUT" in os.environ:
            defaults.pop("connect_timeout", None)
        self._conninfo = make_conninfo(url, **defaults)
        self._where = _where(params)
        self._secrets = _secrets_of(url, params)
        # None: the database server's clock (finrelay_now); tests pass their own.
        self._clock = clock
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._writer: GroupCommit[NewEvent | _AttemptRecord] = self._new_writer()
        self._commit_watchers: list[Callable[[int], None]] = []
        self._delivery_watchers: list[Callable[[], None]] = []
        self._listener: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self._where})"

    def _new_writer(self) -> GroupCommit[NewEvent | _AttemptRecord]:
        return GroupCommit(
            self._apply_batch,
            ingest_limit=MAX_PENDING_WRITES,
            max_batch=MAX_BATCH,
            on_commit=self._tell_commit_watchers,
            abandon_waiting=lambda error: isinstance(error, _Unreachable),
        )

    def watch_commits(self, callback: Callable[[int], None]) -> None:
        self._commit_watchers.append(callback)

    def watch_new_deliveries(self, callback: Callable[[], None]) -> None:
        self._delivery_watchers.append(callback)
        if self._pool is not None:
            self._start_listener()

    # Life cycle.

    async def migrate(self) -> tuple[int, int]:
        """Create or migrate the schema (under the schema lock: nodes may start together);
        the (from, to) versions. `open` does this first; `gateway migrate` does only this."""
        try:
            connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as error:
            raise self._unavailable(error) from None
        try:
            async with connection:
                return await migrate(connection, where=self._where)
        except psycopg.Error as error:
            raise self._unavailable(error) from None

    async def open(self) -> None:
        if self._pool is not None:
            return
        await self.migrate()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=POOL_WAIT_SECONDS,
            open=False,
            kwargs={"autocommit": True},
            configure=_configure,
            # Checked when taken: after PostgreSQL restarted, a dead connection is replaced
            # instead of failing a call.
            check=AsyncConnectionPool.check_connection,
            # The pool's reconnection backoff doubles without bound: after a long outage its
            # next attempt could be minutes away. Giving up after a few seconds instead lets
            # the next call start a fresh attempt (1 s, 2 s...): back within seconds.
            reconnect_timeout=RECONNECT_SECONDS,
            name=f"finrelay-store-{self._where}",
        )
        try:
            await pool.open(wait=True, timeout=POOL_WAIT_SECONDS + 5)
        except psycopg.Error as error:
            await pool.close()
            raise self._unavailable(error) from None
        self._pool = pool
        self._writer = self._new_writer()
        self._writer.start()
        if self._delivery_watchers:
            self._start_listener()

    async def close(self) -> None:
        if self._pool is None:
            return
        await self._writer.close()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        pool, self._pool = self._pool, None
        await pool.close()

    async def ping(self) -> None:
        if not self._writer.running:
            raise StoreUnavailable("the store's writer is not running")
        async with self._connection(timeout=PING_SECONDS) as db:
            await db.execute("SELECT 1")

    # Connections, errors and secrets.

    @contextlib.asynccontextmanager
    async def _connection(self, timeout: float | None = None) -> AsyncIterator[Connection]:
        if self._pool is None:
            raise StoreUnavailable("the store is not open")
        try:
            async with self._pool.connection(timeout) as db:
                yield db
        except psycopg.Error as error:
            raise self._unavailable(error) from None

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        async with self._connection() as db, db.transaction():
            yield db

    def _unavailable(self, error: psycopg.Error) -> StoreUnavailable:
        """The StoreUnavailable a driver error becomes: where, never the URL or password."""
        text = self._scrub(" ".join(str(error).split())) or type(error).__name__
        message = f"PostgreSQL {self._where}: {text}"
        if _unreachable(error):
            return _Unreachable(message)
        # Not the connection: a statement timeout, a deadlock PostgreSQL broke, or a bug.
        log.warning("store_statement_failed", sqlstate=error.sqlstate, error=message)
        return StoreUnavailable(message)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()

    def _tell_commit_watchers(self, writes: int) -> None:
        for watcher in self._commit_watchers:
            try:
                watcher(writes)
            except Exception:
                log.exception("commit_watcher_failed")

    # Wake-ups.

    def _start_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="store-listener"
            )

    def _wake(self) -> None:
        for watcher in self._delivery_watchers:
            try:
                watcher()
            except Exception:
                log.exception("delivery_watcher_failed")

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with connection:
                    await connection.execute("LISTEN finrelay_deliveries")
                    if failures:
                        log.info("store_listening_again", database=self._where)
                        # What was committed while nobody listened is due now.
                        self._wake()
                    failures = 0
                    async for _ in connection.notifies():
                        self._wake()
            except psycopg.Error as error:
                if failures == 0:
                    log.warning("store_listen_lost", error=str(self._unavailable(error)))
            except Exception:  # whatever it is, the listener must go on listening
                log.exception("store_listen_failed", database=self._where)
            delay = LISTEN_BACKOFF_SECONDS[min(failures, len(LISTEN_BACKOFF_SECONDS) - 1)]
            failures += 1
            await asyncio.sleep(delay)

    # The group commit: accepts and attempt records.

    async def _apply_batch(
        self, writes: Sequence[NewEvent | _AttemptRecord]
    ) -> Sequence[AcceptOutcome | bool]:
        events = [write for write in writes if isinstance(write, NewEvent)]
        records = [write for write in writes if isinstance(write, _AttemptRecord)]
        async with self._transaction() as db:
            outcomes, applied = await _write_batch(db, events, records, self._now())
        answers = iter(outcomes)
        recorded = iter(applied)
        return [
            next(answers) if isinstance(write, NewEvent) else next(recorded) for write in writes
        ]

    # Ingress.

    async def accept(self, event: NewEvent) -> AcceptOutcome:
        outcome = await self._writer.submit(event, ingest=True)
        return "accepted" if outcome == "accepted" else "duplicate"

    async def accept_many(self, events: Sequence[NewEvent]) -> list[AcceptOutcome]:
        if not events:
            return []
        # A transaction of its own rather than the group commit's: the events of one request
        # are committed together or not at all, whatever else is waiting.
        async with self._transaction() as db:
            outcomes, _ = await _write_batch(db, events, [], self._now())
        # One commit carrying one write (the request), as the group commit counts its writes.
        self._tell_commit_watchers(1)
        return outcomes

    async def quarantine(
        self,
        *,
        source: str,
        received_at: float,
        body: bytes,
        headers: dict[str, str],
        verification: str,
        error: str,
    ) -> int:
        encoded_headers = msgspec.json.encode(headers).decode()
        async with self._connection() as db:
            cursor = await db.execute(
                "INSERT INTO quarantine (source, received_at, body, headers, verification, error)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (source, received_at, body, encoded_headers, verification, error),
            )
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def quarantined(self) -> Sequence[QuarantinedPayload]:
        async with self._connection() as db:
            cursor = await db.execute(
                "SELECT id, source, received_at, body, headers, verification, error"
                " FROM quarantine WHERE released_as IS NULL ORDER BY id"
            )
            rows = await cursor.fetchall()
        return [as_struct.quarantined_payload(row) for row in rows]

    async def release_quarantined(
        self, quarantine_id: int, events: Sequence[NewEvent]
    ) -> list[AcceptOutcome]:
        async with self._transaction() as db:
            outcomes: list[AcceptOutcome] = []
            if events:
                outcomes, _ = await _write_batch(db, events, [], self._now())
            await db.execute(
                "UPDATE quarantine SET released_as = %s, released_at = finrelay_now(%s)"
                " WHERE id = %s",
                (released_as(events), self._now(), quarantine_id),
            )
        return outcomes

    async def note_quarantine_error(self, quarantine_id: int, error: str) -> None:
        async with self._connection() as db:
            await db.execute(
                "UPDATE quarantine SET error = %s WHERE id = %s", (error, quarantine_id)
            )

    async def drop_quarantined(self, quarantine_id: int) -> bool:
        async with self._connection() as db:
            cursor = await db.execute(
                "DELETE FROM quarantine WHERE id = %s AND released_as IS NULL", (quarantine_id,)
            )
            return cursor.rowcount > 0

    # Delivery.

    async def claim_due(
        self,
        *,
        subscriber: str,
        limit: int,
        max_in_flight: int,
        lease_seconds: float,
        owner: str,
    ) -> Claim:
        params = {
            "subscriber": subscriber,
            "now": self._now(),
            "lease": float(lease_seconds),
            "owner": owner,
        }
        async with self._transaction() as db:
            # One claim of this subscriber at a time, across nodes. The count is a statement of
            # its own, after the lock: in READ COMMITTED its snapshot then holds every lease the
            # claim it waited for took (one statement taking the lock would count from before).
            await db.execute("SELECT pg_advisory_xact_lock(%s, %s)", _claim_lock(subscriber))
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
                {**params, "limit": min(limit, room)},
                # Bodies as they are stored, not hex text to decode.
                binary=True,
            )
            rows = await cursor.fetchall()
        # RETURNING has no order of its own: oldest due first, as claimed.
        rows.sort(key=lambda row: (row[5], row[0]))
        return Claim(
            deliveries=tuple(
                as_struct.claimed_delivery(row, lease_token=int(row[6])) for row in rows
            ),
            full=live + len(rows) >= max_in_flight,
        )

    async def release_leases(self, owner: str) -> None:
        async with self._transaction() as db:
            await db.execute(_RELEASE_LEASES_OF, {"owner": owner})
            await db.execute(
                "DELETE FROM dispatcher_heartbeats WHERE owner = %(owner)s", {"owner": owner}
            )

    async def heartbeat(self, owner: str) -> None:
        async with self._connection() as db:
            await db.execute(
                "INSERT INTO dispatcher_heartbeats (owner, beat_at) VALUES (%s, finrelay_now(%s))"
                " ON CONFLICT (owner) DO UPDATE SET beat_at = excluded.beat_at",
                (owner, self._now()),
            )

    async def release_leases_of_silent_owners(self, silent_for: float) -> list[str]:
        # The owners it forgets are exactly those whose leases it gives back; of two nodes
        # doing this at once, one finds them (the other waits for its commit, then none).
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM dispatcher_heartbeats"
                " WHERE beat_at < finrelay_now(%s) - %s RETURNING owner",
                (self._now(), float(silent_for)),
            )
            silent = [str(row[0]) for row in await cursor.fetchall()]
            for owner in silent:
                await db.execute(_RELEASE_LEASES_OF, {"owner": owner})
        return silent

    async def record_attempt(
        self, attempt: Attempt, decision: Decision, *, lease_token: int
    ) -> bool:
        applied = await self._writer.submit(
            _AttemptRecord(attempt, decision, lease_token), ingest=False
        )
        assert isinstance(applied, bool)
        return applied

    async def next_due_at(self, *, subscribers: Sequence[str]) -> float | None:
        # Per subscriber, the first unleased pending delivery in (subscriber, next_attempt_at):
        # a few index entries each, where a MIN over all pending rows would read every one.
        async with self._connection() as db:
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
        self,
        *,
        now: float,
        subscriber: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        async with self._transaction() as db:
            cursor = await db.execute(
                "SELECT id, subscriber, ordering_key FROM deliveries WHERE state = 'dead'"
                " AND (%(subscriber)s::text IS NULL OR subscriber = %(subscriber)s)"
                " AND (%(since)s::float8 IS NULL OR finished_at >= %(since)s)"
                " AND (%(until)s::float8 IS NULL OR finished_at <= %(until)s)",
                {"subscriber": subscriber, "since": since, "until": until},
            )
            found = await cursor.fetchall()
            locked = await _lock_keys(db, _pairs(found))
            # Read again under the key locks: another redrive may have taken some meanwhile.
            cursor = await db.execute(
                "SELECT id, subscriber, ordering_key FROM deliveries"
                " WHERE id = ANY(%s) AND state = 'dead' ORDER BY id FOR NO KEY UPDATE",
                ([int(row[0]) for row in found],),
            )
            dead = await cursor.fetchall()
            await _lock_keys(db, _pairs(dead), locked)
            # In commit order: of several dead letters of one key, the first goes out, the
            # others wait behind it (and behind whatever of the key is pending already).
            busy = await _busy_keys(db, _pairs(dead))
            ids: list[int] = []
            states: list[str] = []
            for delivery_id, name, key in dead:
                state = "pending"
                if key is not None:
                    state = "held" if (name, key) in busy else "pending"
                    busy.add((name, key))
                ids.append(int(delivery_id))
                states.append(state)
            await db.execute(
                "UPDATE deliveries d SET state = u.state, attempts = 0, next_attempt_at = %s,"
                " finished_at = NULL, lease_until = NULL, lease_owner = NULL"
                " FROM unnest(%s::bigint[], %s::text[]) AS u(id, state) WHERE d.id = u.id",
                (now, ids, states),
            )
            if "pending" in states:
                await db.execute(_NOTIFY)
        return len(ids)

    async def replay(
        self,
        event_id: str,
        subscribers: Sequence[str],
        *,
        now: float,
        ordered: Collection[str] = (),
    ) -> int | None:
        async with self._transaction() as db:
            cursor = await db.execute(
                "SELECT source, subject FROM events WHERE id = %s", (event_id,)
            )
            event = await cursor.fetchone()
            if event is None:
                return None
            keys = {
                subscriber: ordering_key(event[0], event[1]) if subscriber in ordered else None
                for subscriber in subscribers
            }
            await _lock_keys(db, [(name, key) for name, key in keys.items() if key is not None])
            # A share lock on the event: retention skips an event being replayed.
            cursor = await db.execute("SELECT 1 FROM events WHERE id = %s FOR SHARE", (event_id,))
            if await cursor.fetchone() is None:
                return None
            made_pending = False
            for subscriber in subscribers:
                key = keys[subscriber]
                cursor = await db.execute(
                    "SELECT state, ordering_key FROM deliveries"
                    " WHERE event_id = %s AND subscriber = %s",
                    (event_id, subscriber),
                )
                current = await cursor.fetchone()
                if current is not None and current[0] in ("pending", "held"):
                    # Still waiting: it keeps its state and its place, with a fresh schedule.
                    state, key = current[0], current[1]
                elif key is not None and await _busy_keys(db, [(subscriber, key)]):
                    state = "held"
                else:
                    state = "pending"
                made_pending = made_pending or state == "pending"
                await db.execute(
                    "INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at,"
                    " state, ordering_key) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (event_id, subscriber) DO UPDATE SET"
                    " state = excluded.state, attempts = 0,"
                    " next_attempt_at = excluded.next_attempt_at, finished_at = NULL,"
                    " lease_until = NULL, lease_owner = NULL,"
                    " ordering_key = excluded.ordering_key",
                    (event_id, subscriber, now, now, state, key),
                )
            if made_pending:
                await db.execute(_NOTIFY)
        return len(subscribers)

    async def event_subscribers(self, event_id: str) -> Sequence[str]:
        async with self._connection() as db:
            cursor = await db.execute(
                "SELECT subscriber FROM deliveries WHERE event_id = %s ORDER BY id", (event_id,)
            )
            return [str(row[0]) for row in await cursor.fetchall()]

    async def delivery_backlog(self) -> dict[str, Backlog]:
        # Two partial indexes, one per state: never a walk of the delivered rows.
        async with self._connection() as db:
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

    async def subscriber_circuits(self) -> dict[str, tuple[int, bytes]]:
        async with self._connection() as db:
            cursor = await db.execute("SELECT subscriber, version, state FROM subscriber_circuits")
            rows = await cursor.fetchall()
        return {str(row[0]): (int(row[1]), bytes(row[2])) for row in rows}

    async def save_subscriber_circuit(
        self, subscriber: str, state: bytes, *, expected_version: int | None
    ) -> bool:
        values = {
            "subscriber": subscriber,
            "state": state,
            "now": self._now(),
            "expected": expected_version,
        }
        async with self._connection() as db:
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

    async def purge_expired(self, *, before: float, after: float, limit: int) -> Purged:
        async with self._transaction() as db:
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

    # Operators: short reads on pooled connections, never in the writer's way.

    async def search_events(
        self, filters: EventFilter, *, after: tuple[float, str] | None, limit: int
    ) -> Sequence[EventRow]:
        conditions: list[sql.Composable] = []
        values: dict[str, Any] = {"limit": limit}
        candidates: tuple[tuple[LiteralString, str, Any], ...] = (
            ("source = %(source)s", "source", filters.source),
            ("type ~ %(type_re)s", "type_re", _regex_or_none(filters.type_glob)),
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
        async with self._connection() as db:
            cursor = await db.execute(query, values)
            rows = await cursor.fetchall()
            cursor = await db.execute(
                "SELECT event_id, subscriber, state FROM deliveries"
                " WHERE event_id = ANY(%s) ORDER BY id",
                ([row[0] for row in rows],),
            )
            states: dict[str, dict[str, DeliveryState]] = {row[0]: {} for row in rows}
            for event_id, subscriber, state in await cursor.fetchall():
                states[event_id][subscriber] = state
        return [as_struct.event_row(row, states[row[0]]) for row in rows]

    async def event_record(self, event_id: str) -> EventRecord | None:
        async with self._connection() as db:
            cursor = await db.execute(
                "SELECT received_at, body FROM events WHERE id = %s", (event_id,)
            )
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
        self, *, subscriber: str | None, after: tuple[float, int] | None, limit: int
    ) -> Sequence[DeadLetter]:
        dead_at, delivery_id = after if after is not None else (None, None)
        async with self._connection() as db:
            cursor = await db.execute(
                "SELECT id, event_id, subscriber, attempts, last_error, finished_at"
                " FROM deliveries WHERE state = 'dead'"
                " AND (%(subscriber)s::text IS NULL OR subscriber = %(subscriber)s)"
                " AND (%(dead_at)s::float8 IS NULL"
                " OR (finished_at, id) < (%(dead_at)s::float8, %(id)s::bigint))"
                " ORDER BY finished_at DESC, id DESC LIMIT %(limit)s",
                {"subscriber": subscriber, "dead_at": dead_at, "id": delivery_id, "limit": limit},
            )
            rows = await cursor.fetchall()
        return [as_struct.dead_letter(row) for row in rows]

    async def dead_counts(self) -> dict[str, int]:
        async with self._connection() as db:
            cursor = await db.execute(
                "SELECT subscriber, count(*) FROM deliveries WHERE state = 'dead'"
                " GROUP BY subscriber"
            )
            return {str(row[0]): int(row[1]) for row in await cursor.fetchall()}

    async def paused_subscribers(self) -> set[str]:
        async with self._connection() as db:
            cursor = await db.execute("SELECT subscriber FROM subscriber_pauses")
            return {str(row[0]) for row in await cursor.fetchall()}

    async def set_paused(self, subscriber: str, paused: bool) -> None:
        async with self._connection() as db:
            if paused:
                await db.execute(
                    "INSERT INTO subscriber_pauses (subscriber, paused_at)"
                    " VALUES (%s, finrelay_now(%s)) ON CONFLICT (subscriber) DO NOTHING",
                    (subscriber, self._now()),
                )
            else:
                await db.execute(
                    "DELETE FROM subscriber_pauses WHERE subscriber = %s", (subscriber,)
                )

    async def stats(self) -> dict[str, int]:
        async with self._connection() as db:
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


# The transactions' steps: functions of a connection inside a transaction.


async def _write_batch(
    db: Connection,
    events: Sequence[NewEvent],
    records: Sequence[_AttemptRecord],
    now: float | None,
) -> tuple[list[AcceptOutcome], list[bool]]:
    """One group commit's writes, in the caller's transaction: every key lock first (those of
    the events to insert, and of the deliveries whose attempts settle), then the attempts'
    rows, then the events (module docstring: the locking order)."""
    firsts: dict[str, NewEvent] = {}
    for event in events:
        firsts.setdefault(event.id, event)
    pairs = [pair for event in firsts.values() for pair in _ordering_pairs(event)]
    if records:
        cursor = await db.execute(
            "SELECT subscriber, ordering_key FROM deliveries"
            " WHERE id = ANY(%s) AND ordering_key IS NOT NULL",
            ([record.attempt.delivery_id for record in records],),
        )
        pairs += [(str(row[0]), str(row[1])) for row in await cursor.fetchall()]
    locked = await _lock_keys(db, pairs)
    made_pending = False
    applied: list[bool] = []
    if records:
        applied, made_pending = await _record_attempts(db, records, now, locked)
    outcomes: list[AcceptOutcome] = []
    if events:
        outcomes, accepted_pending = await _insert_events(db, events, firsts)
        made_pending = made_pending or accepted_pending
    if made_pending:
        await db.execute(_NOTIFY)
    return outcomes, applied


async def _insert_events(
    db: Connection, events: Sequence[NewEvent], firsts: dict[str, NewEvent]
) -> tuple[list[AcceptOutcome], bool]:
    """Insert events and their deliveries; for each event, accepted or duplicate (of a stored
    event, or of an earlier copy in this batch), and whether a delivery was made pending."""
    ordered = sorted(firsts.values(), key=lambda event: event.id)
    cursor = await db.execute(
        "INSERT INTO events (id, source, type, received_at, body, subject, status)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::bytea[],"
        " %s::text[], %s::text[]) ON CONFLICT (id) DO NOTHING RETURNING id",
        (
            [event.id for event in ordered],
            [event.source for event in ordered],
            [event.type for event in ordered],
            [event.received_at for event in ordered],
            [event.body for event in ordered],
            [event.subject for event in ordered],
            [event.status for event in ordered],
        ),
    )
    inserted = {str(row[0]) for row in await cursor.fetchall()}
    outcomes: list[AcceptOutcome] = []
    answered: set[str] = set()
    for event in events:
        first_copy = event.id not in answered
        answered.add(event.id)
        outcomes.append("accepted" if first_copy and event.id in inserted else "duplicate")
    # Arrival order is commit order: of two events of one key in this batch, the first goes
    # out, the second is held behind it. Read after the key locks (READ COMMITTED).
    accepted = [event for event in firsts.values() if event.id in inserted]
    busy = await _busy_keys(
        db, list(dict.fromkeys(pair for event in accepted for pair in _ordering_pairs(event)))
    )
    columns: tuple[list[Any], ...] = ([], [], [], [], [])
    for event in accepted:
        keys = dict(_ordering_pairs(event))
        for subscriber in event.subscribers:
            key = keys.get(subscriber)
            state = "pending"
            if key is not None:
                state = "held" if (subscriber, key) in busy else "pending"
                busy.add((subscriber, key))
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


async def _record_attempts(
    db: Connection, records: Sequence[_AttemptRecord], now: float | None, locked: set[int]
) -> tuple[list[bool], bool]:
    """Record attempts and move their deliveries on as decided; for each record whether it
    applied (fencing: only under the token that holds a pending delivery's lease), and whether
    a held delivery was made pending. The rows are locked (in id order) before they are read,
    so nothing changes between that read and the writes."""
    cursor = await db.execute(
        "SELECT id, lease_token, subscriber, ordering_key FROM deliveries"
        " WHERE id = ANY(%s) AND state = 'pending' AND lease_until IS NOT NULL"
        " ORDER BY id FOR NO KEY UPDATE",
        (sorted({record.attempt.delivery_id for record in records}),),
    )
    held: set[tuple[int, int]] = set()
    keys: dict[int, tuple[str, str]] = {}
    for row in await cursor.fetchall():
        held.add((int(row[0]), int(row[1])))
        if row[3] is not None:
            keys[int(row[0])] = (str(row[2]), str(row[3]))
    # A replay may have changed a key since it was locked: lock that one too.
    await _lock_keys(db, list(keys.values()), locked)
    applied: list[bool] = []
    for record in records:
        lease = (record.attempt.delivery_id, record.lease_token)
        applied.append(lease in held)
        held.discard(lease)  # one record per lease
    settling = [record for record, ok in zip(records, applied, strict=True) if ok]
    if not settling:
        return applied, False
    attempts = [record.attempt for record in settling]
    await db.execute(
        "INSERT INTO attempts (delivery_id, started_at, duration, outcome, status_code, error,"
        " response_excerpt) SELECT * FROM unnest(%s::bigint[], %s::float8[], %s::float8[],"
        " %s::text[], %s::int[], %s::text[], %s::text[])",
        (
            [attempt.delivery_id for attempt in attempts],
            [attempt.started_at for attempt in attempts],
            [attempt.duration for attempt in attempts],
            [attempt.outcome for attempt in attempts],
            [attempt.status_code for attempt in attempts],
            [attempt.error for attempt in attempts],
            [attempt.response_excerpt for attempt in attempts],
        ),
    )
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
    for record in settling:
        attempt, decision = record.attempt, record.decision
        finished = attempt.started_at + attempt.duration
        if isinstance(decision, RetryAt):
            outcome: tuple[str, float | None, float | None] = ("pending", decision.at, None)
        elif isinstance(decision, Delivered):
            outcome = ("delivered", None, finished)
        else:
            outcome = ("dead", None, finished)
        state, next_at, finished_at = outcome
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
    settled = [
        keys[record.attempt.delivery_id]
        for record in settling
        if not isinstance(record.decision, RetryAt) and record.attempt.delivery_id in keys
    ]
    released = await _release_next(db, list(dict.fromkeys(settled)), now)
    return applied, released > 0


async def _release_next(db: Connection, pairs: list[tuple[str, str]], now: float | None) -> int:
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


async def _busy_keys(db: Connection, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
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


async def _lock_keys(
    db: Connection, pairs: Iterable[tuple[str, str]], already: set[int] | None = None
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


def _claim_lock(subscriber: str) -> tuple[int, int]:
    """A subscriber's claim lock: CLAIM_LOCK_CLASS and 32 bits of a hash of its name, the same
    on every node. Two names that share one only wait for each other's claims."""
    digest = hashlib.blake2b(subscriber.encode(), digest_size=4).digest()
    return CLAIM_LOCK_CLASS, int.from_bytes(digest, "big", signed=True)


def _ordering_pairs(event: NewEvent) -> list[tuple[str, str]]:
    """(subscriber, ordering key) of each of the event's ordered deliveries."""
    key = ordering_key(event.source, event.subject)
    if key is None:
        return []
    return [(subscriber, key) for subscriber in event.subscribers if subscriber in event.ordered]


def _pairs(rows: Iterable[TupleRow]) -> list[tuple[str, str]]:
    """(subscriber, ordering key) of (id, subscriber, ordering_key) rows that have a key."""
    return list(dict.fromkeys((str(row[1]), str(row[2])) for row in rows if row[2] is not None))


# A start-of-text anchor after a character: no text matches it.
NEVER_MATCHES = "x^"


def glob_to_regex(glob: str) -> str:
    """A shell glob (SQLite's GLOB: `*`, `?`, `[...]`, `[^...]`, case-sensitive) as an
    anchored PostgreSQL regular expression matching the same strings."""
    parts = ["^"]
    index = 0
    while index < len(glob):
        char = glob[index]
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char == "[":
            end = _class_end(glob, index)
            if end is None:
                # SQLite's GLOB: a bracket that never closes matches nothing at all.
                return NEVER_MATCHES
            body = glob[index + 1 : end]
            negate = body.startswith("^")
            if negate:
                body = body[1:]
            # Inside a bracket expression only `\` (ARE's escape) and `^` first need care.
            body = body.replace("\\", "\\\\")
            if body.startswith("^"):
                body = "\\" + body
            parts.append("[" + ("^" if negate else "") + body + "]")
            index = end
        else:
            parts.append(re.escape(char) if not char.isalnum() else char)
        index += 1
    parts.append("$")
    return "".join(parts)


def _class_end(glob: str, start: int) -> int | None:
    """Where the bracket expression opened at `start` closes (a `]` right after `[` or `[^`
    is a member), None when it never does."""
    index = start + 1
    if index < len(glob) and glob[index] == "^":
        index += 1
    if index < len(glob) and glob[index] == "]":
        index += 1
    end = glob.find("]", index)
    return None if end < 0 else end


def _regex_or_none(glob: str | None) -> str | None:
    return None if glob is None else glob_to_regex(glob)


async def _configure(connection: Connection) -> None:
    """Every pooled connection: statements bounded in time, and no transaction left open."""
    await connection.execute(
        "SELECT set_config('statement_timeout', %s, false),"
        " set_config('idle_in_transaction_session_timeout', %s, false)",
        (STATEMENT_TIMEOUT, IDLE_IN_TRANSACTION_TIMEOUT),
    )


def _unreachable(error: psycopg.Error) -> bool:
    """Whether the error means the database is out of reach, rather than one statement
    failing: no connection to be had, or the connection lost or shut down."""
    if isinstance(error, PoolTimeout):
        return True
    state = error.sqlstate
    if state is None:
        return isinstance(error, psycopg.OperationalError)
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _where(params: dict[str, Any]) -> str:
    """host:port/database for messages: what an operator needs, nothing secret."""
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    database = str(params.get("dbname") or os.environ.get("PGDATABASE") or "")
    return f"{host}:{port}/{database}"


def _secrets_of(url: str, params: dict[str, Any]) -> list[str]:
    """Every spelling of the password a message could carry, longest first."""
    found = {str(params.get("password") or ""), os.environ.get("PGPASSWORD", "")}
    for password in list(found):
        found.add(quote(password, safe=""))
    match = re.match(r"^[a-z]+://[^:@/]*:([^@/]*)@", url)
    if match:
        found.add(match.group(1))
    return sorted((secret for secret in found if secret), key=len, reverse=True)

"""The embedded store: SQLite in WAL mode with `synchronous=FULL`, and group commit.

Durability costs one fsync per commit. Committing each request alone caps ingest at the disk's
fsync rate (about 3,800/s here); instead, one writer thread owns the connection and drains
every write that is waiting into one transaction. Under load a commit carries hundreds of
events for the price of one fsync; idle, a lone request commits at once. Each request still
gets its own answer, because each job runs in its own savepoint.

Writes wait in two rooms (`_Rooms`). Ingest's is bounded: when the disk cannot keep up,
`accept` raises StoreUnavailable (503) instead of letting memory grow. The dispatcher's claims
and attempt records have their own, which ingest cannot fill. Nothing a batch raises stops the
writer: its callers get StoreUnavailable and the next batch goes on; a writer that cannot go on
(its connection unusable) marks the store unavailable, so every caller and /readyz hear it at
once rather than wait for an answer that will never come.

Several processes may open one database (`serve --workers N`, and the CLI next to a running
gateway): their writers take turns through a lock file (`_WriterLock`), and WAL lets everyone
read meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import structlog

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
    StoreSchemaError,
    StoreUnavailable,
    ordering_key,
    released_as,
)

__all__ = ["SQLiteStore", "ordering_key", "sqlite_path_from_url"]

log = structlog.get_logger("gateway.store")

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

# 2: fencing tokens on deliveries, versioned circuits, dispatcher heartbeats (`_upgrade`).
# 3: ordered delivery per subject: events' subject, deliveries' ordering key, the `held` state.
# 4: operators (gateway/operations/): events' data.status, a subject index, paused subscribers.
# 5: claims bound each subscriber's live leases by its max_in_flight, for every process together
#    (`deliveries_leased`, which SCHEMA adds to an older database). A version too: a gateway
#    of version 4 would claim past the bound beside this one's processes, and refuses a file
#    at version 5 instead.
SCHEMA_VERSION = 5
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
# Ordered delivery (CONTRACT.md 4b), on columns `_upgrade` may have just added. An ordering key
# is `<source>/<subject>`, set only on deliveries to ordered subscribers. Claims read only
# `pending` rows (deliveries_pending), so held ones cost a claim nothing however many wait;
# these two answer "is a delivery of this key pending?" and "which held one is next?" with one
# index seek each.
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

# Ingest writes waiting for the writer thread. At ~10,000 events/s this is several seconds of
# backlog: past it, the disk is not keeping up and 503 is the honest answer.
MAX_PENDING_WRITES = 20_000
# Jobs per transaction: large enough to amortize the fsync, small enough to answer promptly.
MAX_BATCH = 1_000
# While writes keep coming, a commit starts at least this long after the last one ended, so
# that the writes arriving meanwhile share it. A commit (an fsync) costs the machine about as
# much CPU however few writes it carries (about 0.45 ms here, fsync included): committing each
# trickling write on its own spent 370-550 us of the writer's CPU per webhook at 1,000-2,300
# webhooks/s (2 cores, measured in a process that only wrote), CPU the serving processes
# needed; with this gap,
# about 200 us. A write that finds the writer idle for longer commits at once: an unloaded
# gateway answers as fast as before, and a loaded one waits at most this much more.
COMMIT_GAP_SECONDS = 0.002
# The interpreter's switch interval in a process whose store has a writer thread (`open`).
WRITER_SWITCH_INTERVAL_SECONDS = 0.0005
# A writer that has taken no write for this long while writes wait is stuck (another process
# holding the writers' lock, a disk that does not answer): /readyz says so.
WRITER_STALL_SECONDS = 30.0


def sqlite_path_from_url(url: str) -> Path:
    """`sqlite:///./data/gateway.db` -> ./data/gateway.db (relative to the working directory);
    `sqlite:////var/lib/x.db` -> /var/lib/x.db."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError("expected sqlite:///<path>")
    return Path(url[len(prefix) :])


class _Pending:
    """A write on its way to the writer thread, and the future its caller awaits.

    The two writes of the hot path, accepting an event and recording an attempt, are typed
    (`kind` and `payload`) so that a batch applies all of them with a few set-based statements.
    Anything else is a `job`: a function of the connection, run in a savepoint of its own.
    """

    __slots__ = ("future", "job", "kind", "loop", "payload")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        kind: str = "job",
        payload: Any = None,
        job: Job | None = None,
    ) -> None:
        self.kind = kind
        self.payload = payload
        self.job = job
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


class _Rooms:
    """The writes waiting for the writer thread, in two rooms.

    Ingest (`accept`, `quarantine`) is bounded by MAX_PENDING_WRITES. Everything else (the
    dispatcher's claims and attempt records, circuits, operators' commands) has a room of its
    own that ingest cannot fill: refusing an attempt record because webhooks filled the queue
    would leave its delivery leased, and sent again when the lease runs out, turning overload
    into duplicate sends. That room needs no bound of its own: the dispatcher has at most
    `max_in_flight` sends per subscriber, each waiting for its record.

    A batch takes the other room's writes first, up to half of it, then ingest's, then more of
    either: neither room starves the other.
    """

    def __init__(self, ingest_limit: int) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._ingest: deque[_Pending] = deque()
        self._other: deque[_Pending] = deque()
        self._ingest_limit = ingest_limit
        self._batch_limit = MAX_BATCH
        self._closed: str | None = None
        # Since when writes have waited with none taken by the writer (None: nothing waits).
        self._waiting_since: float | None = None

    def put(self, pending: _Pending, *, ingest: bool) -> None:
        """Queue a write (never blocks); StoreUnavailable when its room is full or closed."""
        with self._ready:
            if self._closed is not None:
                raise StoreUnavailable(self._closed)
            if not ingest:
                self._other.append(pending)
            elif len(self._ingest) < self._ingest_limit:
                self._ingest.append(pending)
            else:
                raise StoreUnavailable("too many writes waiting for the disk")
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
            # The writer waits for a first write, or gathers more until a time it keeps by
            # itself: waking it (and handing it the GIL) for every write would cost more than
            # the write.
            waiting = len(self._other) + len(self._ingest)
            if waiting == 1 or waiting >= self._batch_limit:
                self._notify()

    def _notify(self) -> None:
        self._ready.notify()

    def take(self, limit: int, not_before: float = 0.0) -> list[_Pending] | None:
        """The next batch, waiting for one; None once closed and empty. Once a write waits,
        more may join it until `not_before` (time.monotonic()), unless `limit` wait already."""
        with self._ready:
            while not self._other and not self._ingest:
                if self._closed is not None:
                    return None
                self._ready.wait()
            while (
                self._closed is None
                and len(self._other) + len(self._ingest) < limit
                and (left := not_before - time.monotonic()) > 0
            ):
                self._ready.wait(left)
            batch = _take(self._other, limit // 2)
            batch += _take(self._ingest, limit - len(batch))
            batch += _take(self._other, limit - len(batch))
            self._waiting_since = time.monotonic() if self._other or self._ingest else None
            return batch

    def stalled_for(self) -> float:
        """Seconds the writer has taken no write while some wait (0 when none waits)."""
        with self._ready:
            since = self._waiting_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self, reason: str) -> None:
        """Refuse new writes from now on; the writer still takes what is waiting. The lock is
        never held for long, so this is safe on the event loop."""
        with self._ready:
            if self._closed is None:
                self._closed = reason
            self._notify()

    def abandon(self, reason: str) -> list[_Pending]:
        """Close and hand back every waiting write: nobody will take them."""
        with self._ready:
            if self._closed is None:
                self._closed = reason
            waiting = [*self._other, *self._ingest]
            self._other.clear()
            self._ingest.clear()
            self._notify()
        return waiting


def _take(room: deque[_Pending], count: int) -> list[_Pending]:
    return [room.popleft() for _ in range(min(count, len(room)))]


class _WriterLock:
    """An exclusive flock(2) on `<database>-writer.lock`, held for each write transaction.

    SQLite serializes writers by itself, but a writer that finds the database locked sleeps
    (1, 2, 5, 10 ... ms, its busy handler) instead of waiting for the lock to be let go. With
    several gateway processes on one database that meant a p90 of 875 ms at saturation (two
    workers under wrk, before this lock; 17 ms with it). A blocked flock wakes the moment the
    other writer commits, and waits without the GIL. Every SQLiteStore takes it, the CLI's
    included.
    """

    def __init__(self, database: Path) -> None:
        self._fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class SQLiteStore(Store):
    schema_version = SCHEMA_VERSION

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        # The one clock leases and heartbeats are judged by (tests pass their own).
        self._clock = clock
        self._rooms = _Rooms(MAX_PENDING_WRITES)
        self._thread: threading.Thread | None = None
        # Why the writer stopped on its own (the store is unavailable until reopened).
        self._failure: str | None = None
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._commit_watchers: list[Callable[[int], None]] = []
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    def watch_commits(self, callback: Callable[[int], None]) -> None:
        self._commit_watchers.append(callback)

    def watch_new_deliveries(self, callback: Callable[[], None]) -> None:
        # SQLite has no way to hear another process's commit: the dispatcher's poll finds its
        # deliveries (within POLL_SECONDS), and this process's own ingest wakes it directly.
        return

    # Life cycle.

    async def open(self) -> None:
        # Events hold provider payloads: no access for others, whatever the umask says.
        # (Path.mkdir gives missing parents the default mode: each is made here instead.)
        chain = (self.path.parent, *self.path.parent.parents)
        for directory in reversed([path for path in chain if not path.exists()]):
            directory.mkdir(mode=0o750, exist_ok=True)
        self._failure = None
        self._rooms = _Rooms(MAX_PENDING_WRITES)
        # The writer thread takes the GIL back between its statements while it holds the
        # writers' lock, and every other process's writer waits for that lock meanwhile: at the
        # default 5 ms switch interval a loaded event loop kept it waiting for the GIL that
        # long, several times a commit. Measured with two workers (bench/pipeline.py, 2 CPUs):
        # end to end 1,133 and 1,661 events/s at 5 ms, 1,705 and 1,942 at 0.5 ms, interleaved.
        sys.setswitchinterval(WRITER_SWITCH_INTERVAL_SECONDS)
        self._thread = threading.Thread(target=self._writer, name="sqlite-writer", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._opened.wait)
        if self._open_error is not None:
            raise _open_failure(self.path, self._open_error)

    async def close(self) -> None:
        if self._thread is None:
            return
        # Never a blocking put on the event loop: the writer finishes what is waiting, then
        # stops.
        self._rooms.close("the store is closed")
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _connect(self) -> sqlite3.Connection:
        # Created here, not by SQLite (0644 less the umask): owner only. SQLite gives the -wal
        # and -shm files the database's own mode.
        # Only when it does not exist yet (O_EXCL): closing any descriptor of the database drops
        # every POSIX lock this process holds on it, its SQLite connections' included, and
        # another process's connection then deletes the WAL from under them (later commits
        # become invisible to every other process).
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsync'd at every commit, so a commit that returned survives power loss.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=10000")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    def _open_writer(self) -> tuple[sqlite3.Connection, _WriterLock]:
        """The writer's connection, the schema brought up to date, and the lock it writes
        under."""
        lock = _WriterLock(self.path)
        try:
            with lock:
                connection = self._connect()
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreSchemaError(
                        f"{self.path} has schema version {version}, newer than this gateway's"
                        f" {SCHEMA_VERSION}: run the newer gateway, or restore a backup"
                    )
                connection.executescript(SCHEMA)
                _upgrade(connection, version)
                connection.executescript(ORDERING_SCHEMA)
                connection.executescript(OPERATOR_SCHEMA)
                connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            lock.close()
            raise
        return connection, lock

    def _writer(self) -> None:
        try:
            connection, lock = self._open_writer()
        except Exception as error:  # `open` waits for `_opened`: it must hear of anything
            self._open_error = error
            self._opened.set()
            return
        self._opened.set()
        batch: list[_Pending] = []
        committed_at = 0.0
        try:
            while True:
                taken = self._rooms.take(MAX_BATCH, committed_at + COMMIT_GAP_SECONDS)
                if taken is None:
                    break
                batch = taken
                self._run_batch(connection, lock, batch)
                committed_at = time.monotonic()
        except BaseException as error:  # whatever it is, nobody may be left waiting
            self._writer_failed(error, batch)
        finally:
            self._writer_stopped(connection, lock)

    def _writer_failed(self, error: BaseException, batch: list[_Pending]) -> None:
        log.exception("store_writer_stopped")
        if self._failure is None:
            self._failure = f"the store's writer stopped: {error!r}"
        failed = StoreUnavailable(self._failure)
        _hand_back([(pending, None, failed) for pending in batch])

    def _writer_stopped(self, connection: sqlite3.Connection, lock: _WriterLock) -> None:
        if self._failure is not None:
            failed = StoreUnavailable(self._failure)
            waiting = self._rooms.abandon(self._failure)
            _hand_back([(pending, None, failed) for pending in waiting])
        with contextlib.suppress(sqlite3.Error):
            connection.close()
        lock.close()

    def _writer_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run_batch(
        self, connection: sqlite3.Connection, lock: _WriterLock, batch: list[_Pending]
    ) -> None:
        # Every statement is a round trip through the GIL, which the event loop is busy with:
        # a batch costs a handful of statements however many requests it carries.
        accepts = [pending for pending in batch if pending.kind == "accept"]
        attempts = [pending for pending in batch if pending.kind == "attempt"]
        jobs = [pending for pending in batch if pending.kind == "job"]
        results: list[tuple[_Pending, Any, BaseException | None]]
        usable = True
        try:
            with lock:
                try:
                    results = self._apply(connection, accepts, attempts, jobs)
                except BaseException:
                    usable = _roll_back(connection)
                    raise
        except Exception as error:
            # Nothing of this batch is durable. A sqlite3.Error is the commit or the disk under
            # it (a full disk recovers); anything else is a bug, logged, and the writer goes on.
            reason = str(error)
            if not isinstance(error, sqlite3.Error):
                log.exception("store_batch_failed", writes=len(batch))
                reason = f"{type(error).__name__}: {error}"
            unavailable = StoreUnavailable(f"database write failed: {reason}")
            results = [(pending, None, unavailable) for pending in batch]
        else:
            self._tell_watchers(len(batch))
        if not usable:
            # Unavailable before anyone hears of this batch: whoever it answers and asks again
            # (/readyz included) must find the store unavailable, not a writer about to stop.
            self._failure = "the store's writer stopped: its connection cannot roll back"
            self._rooms.close(self._failure)
        _hand_back(results)
        if not usable:
            raise RuntimeError(self._failure)

    def _tell_watchers(self, writes: int) -> None:
        # The batch is committed whatever a watcher does: a watcher's bug must not turn
        # durable writes into errors (the provider would retry an event already stored).
        for watcher in self._commit_watchers:
            try:
                watcher(writes)
            except Exception:
                log.exception("commit_watcher_failed")

    def _apply(
        self,
        connection: sqlite3.Connection,
        accepts: list[_Pending],
        attempts: list[_Pending],
        jobs: list[_Pending],
    ) -> list[tuple[_Pending, Any, BaseException | None]]:
        """One transaction for the whole batch; rolled back (and raising) if any of it fails."""
        results: list[tuple[_Pending, Any, BaseException | None]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            now = self._clock()
            if accepts:
                outcomes = _insert_events(connection, [pending.payload for pending in accepts])
                results += [
                    (p, outcome, None) for p, outcome in zip(accepts, outcomes, strict=True)
                ]
            if attempts:
                applied = _record_attempts(
                    connection, [pending.payload for pending in attempts], now
                )
                results += [(p, ok, None) for p, ok in zip(attempts, applied, strict=True)]
            for pending in jobs:
                results.append(_run_job(connection, pending))
            connection.execute("COMMIT")
        except sqlite3.Error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return results

    async def _submit(self, pending: _Pending, *, ingest: bool = False) -> Any:
        """Hand a write to the writer thread and wait for its answer. `ingest` writes go to the
        bounded room (StoreUnavailable at once when it is full); the others never find theirs
        full (`_Rooms`)."""
        if self._thread is None:
            raise StoreUnavailable("the store is not open")
        self._rooms.put(pending, ingest=ingest)
        return await pending.future

    async def _write(self, job: Callable[[sqlite3.Connection], T], *, ingest: bool = False) -> T:
        result: T = await self._submit(_Pending(asyncio.get_running_loop(), job=job), ingest=ingest)
        return result

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the reader connection, in a worker thread.

        WAL lets it run while the writer commits, so a slow read (counting a million pending
        deliveries for /metrics) never holds up ingest. It sees every committed write, so every
        write that was answered before it.
        """
        if self._thread is None:
            raise StoreUnavailable("the store is not open")

        def run() -> T:
            with self._reader_lock:
                try:
                    if self._reader is None:
                        self._reader = self._connect()
                    return query(self._reader)
                except (sqlite3.Error, OSError) as error:
                    raise StoreUnavailable(f"database read failed: {error}") from None

        return await asyncio.to_thread(run)

    async def ping(self) -> None:
        # A writer that stopped answers no write: unavailable, even though reads still work.
        if self._failure is not None:
            raise StoreUnavailable(self._failure)
        if not self._writer_running():
            raise StoreUnavailable("the store's writer is not running")
        stalled = self._rooms.stalled_for()
        if stalled > WRITER_STALL_SECONDS:
            raise StoreUnavailable(f"the store's writer has taken no write for {stalled:.0f} s")
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    async def durability(self) -> tuple[str, int]:
        """`PRAGMA journal_mode` and `PRAGMA synchronous` as the writer connection has them:
        what makes a commit survive a power loss (a crash test cannot tell FULL from NORMAL)."""

        def job(db: sqlite3.Connection) -> tuple[str, int]:
            journal_mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            synchronous = db.execute("PRAGMA synchronous").fetchone()[0]
            return str(journal_mode), int(synchronous)

        return await self._write(job)

    # Ingress.

    async def accept(self, event: NewEvent) -> AcceptOutcome:
        outcome: AcceptOutcome = await self._submit(
            _Pending(asyncio.get_running_loop(), kind="accept", payload=event), ingest=True
        )
        return outcome

    async def accept_many(self, events: Sequence[NewEvent]) -> list[AcceptOutcome]:
        batch = list(events)
        if not batch:
            return []
        # One job: its savepoint commits with the writer's batch, all of it or none of it.
        return await self._write(lambda db: _insert_events(db, batch), ingest=True)

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

        def job(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT INTO quarantine (source, received_at, body, headers, verification, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (source, received_at, body, encoded_headers, verification, error),
            )
            return int(cursor.lastrowid or 0)

        return await self._write(job, ingest=True)

    async def quarantined(self) -> Sequence[QuarantinedPayload]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT id, source, received_at, body, headers, verification, error"
                " FROM quarantine WHERE released_as IS NULL ORDER BY id"
            ).fetchall()
        )
        return [as_struct.quarantined_payload(row) for row in rows]

    async def release_quarantined(
        self, quarantine_id: int, events: Sequence[NewEvent]
    ) -> list[AcceptOutcome]:
        batch = list(events)

        def job(db: sqlite3.Connection) -> list[AcceptOutcome]:
            outcomes = _insert_events(db, batch) if batch else []
            db.execute(
                "UPDATE quarantine SET released_as = ?, released_at = ? WHERE id = ?",
                (released_as(batch), time.time(), quarantine_id),
            )
            return outcomes

        return await self._write(job)

    async def note_quarantine_error(self, quarantine_id: int, error: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE quarantine SET error = ? WHERE id = ?", (error, quarantine_id)
            )
        )

    async def drop_quarantined(self, quarantine_id: int) -> bool:
        def job(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "DELETE FROM quarantine WHERE id = ? AND released_as IS NULL", (quarantine_id,)
            )
            return cursor.rowcount > 0

        return await self._write(job)

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
        def job(db: sqlite3.Connection) -> Claim:
            # Counted and claimed in the writer's transaction (BEGIN IMMEDIATE, under the
            # writers' flock): no other process claims in between, nor takes the same slots.
            now = self._clock()
            ((live,),) = db.execute(
                "SELECT COUNT(*) FROM deliveries INDEXED BY deliveries_leased"
                " WHERE state = 'pending' AND lease_until IS NOT NULL AND subscriber = ?"
                " AND lease_until >= ?",
                (subscriber, now),
            ).fetchall()
            room = max_in_flight - live
            if room <= 0:
                return Claim(deliveries=(), full=True)
            rows = db.execute(
                "SELECT d.id, d.event_id, d.subscriber, d.attempts, d.created_at,"
                " d.next_attempt_at, d.lease_token, e.body, e.source, e.type"
                " FROM deliveries d JOIN events e ON e.id = d.event_id"
                " WHERE d.state = 'pending' AND d.subscriber = ? AND d.next_attempt_at <= ?"
                " AND (d.lease_until IS NULL OR d.lease_until < ?)"
                " ORDER BY d.next_attempt_at, d.id LIMIT ?",
                (subscriber, now, now, min(limit, room)),
            ).fetchall()
            # Each claim increments the row's token: the new holder's is the old one + 1, and
            # every earlier holder's token is now stale (a fencing token).
            for chunk in _chunks(db, [(row[0],) for row in rows], reserved=2):
                marks = ",".join("?" * len(chunk))
                db.execute(
                    "UPDATE deliveries SET lease_until = ?, lease_owner = ?,"  # noqa: S608 - "?"
                    f" lease_token = lease_token + 1 WHERE id IN ({marks})",
                    [now + lease_seconds, owner, *(value for (value,) in chunk)],
                )
            return Claim(
                deliveries=tuple(
                    as_struct.claimed_delivery(row, lease_token=row[6] + 1) for row in rows
                ),
                full=live + len(rows) >= max_in_flight,
            )

        return await self._write(job)

    async def release_leases(self, owner: str) -> None:
        def job(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL"
                " WHERE lease_owner = ? AND state = 'pending'",
                (owner,),
            )
            db.execute("DELETE FROM dispatcher_heartbeats WHERE owner = ?", (owner,))

        await self._write(job)

    async def heartbeat(self, owner: str) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO dispatcher_heartbeats (owner, beat_at) VALUES (?, ?)"
                " ON CONFLICT (owner) DO UPDATE SET beat_at = excluded.beat_at",
                (owner, self._clock()),
            )
        )

    async def release_leases_of_silent_owners(self, silent_for: float) -> list[str]:
        def job(db: sqlite3.Connection) -> list[str]:
            silent = [
                str(owner)
                for (owner,) in db.execute(
                    "SELECT owner FROM dispatcher_heartbeats WHERE beat_at < ?",
                    (self._clock() - silent_for,),
                )
            ]
            for owner in silent:
                db.execute(
                    "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL"
                    " WHERE lease_owner = ? AND state = 'pending'",
                    (owner,),
                )
                db.execute("DELETE FROM dispatcher_heartbeats WHERE owner = ?", (owner,))
            return silent

        return await self._write(job)

    async def record_attempt(
        self, attempt: Attempt, decision: Decision, *, lease_token: int
    ) -> bool:
        applied: bool = await self._submit(
            _Pending(
                asyncio.get_running_loop(),
                kind="attempt",
                payload=(attempt, decision, lease_token),
            )
        )
        return applied

    async def next_due_at(self, *, subscribers: Sequence[str]) -> float | None:
        # Per subscriber, the first pending delivery in the (subscriber, next_attempt_at) index
        # that nobody holds a lease on: a walk of a few index entries (at most the ones in
        # flight), where MIN over an expression would read every pending row.
        def query(db: sqlite3.Connection) -> float | None:
            times = []
            for subscriber in subscribers:
                row = db.execute(
                    "SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_pending"
                    " WHERE state = 'pending' AND subscriber = ? AND lease_until IS NULL"
                    " ORDER BY next_attempt_at LIMIT 1",
                    (subscriber,),
                ).fetchone()
                if row is not None:
                    times.append(float(row[0]))
            return min(times, default=None)

        return await self._read(query)

    async def redrive(
        self,
        *,
        now: float,
        subscriber: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        def job(db: sqlite3.Connection) -> int:
            dead = db.execute(
                "SELECT id, subscriber, ordering_key FROM deliveries"
                " WHERE state = 'dead' AND (? IS NULL OR subscriber = ?)"
                " AND (? IS NULL OR finished_at >= ?) AND (? IS NULL OR finished_at <= ?)"
                " ORDER BY id",
                (subscriber, subscriber, since, since, until, until),
            ).fetchall()
            # In commit order: of several dead letters of one key, the first goes out, the
            # others wait behind it (and behind whatever of the key is pending already).
            busy = _busy_keys(
                db, list(dict.fromkeys((row[1], row[2]) for row in dead if row[2] is not None))
            )
            updates = []
            for delivery_id, name, key in dead:
                state = "pending"
                if key is not None:
                    state = "held" if (name, key) in busy else "pending"
                    busy.add((name, key))
                updates.append((state, now, delivery_id))
            db.executemany(
                "UPDATE deliveries SET state = ?, attempts = 0, next_attempt_at = ?,"
                " finished_at = NULL, lease_until = NULL, lease_owner = NULL WHERE id = ?",
                updates,
            )
            return len(updates)

        return await self._write(job)

    async def replay(
        self,
        event_id: str,
        subscribers: Sequence[str],
        *,
        now: float,
        ordered: Collection[str] = (),
    ) -> int | None:
        def job(db: sqlite3.Connection) -> int | None:
            event = db.execute(
                "SELECT source, subject FROM events WHERE id = ?", (event_id,)
            ).fetchone()
            if event is None:
                return None
            for subscriber in subscribers:
                key = ordering_key(event[0], event[1]) if subscriber in ordered else None
                current = db.execute(
                    "SELECT state, ordering_key FROM deliveries"
                    " WHERE event_id = ? AND subscriber = ?",
                    (event_id, subscriber),
                ).fetchone()
                if current is not None and current[0] in ("pending", "held"):
                    # Still waiting: it keeps its state and its place, with a fresh schedule.
                    state, key = current
                elif key is not None and _busy_keys(db, [(subscriber, key)]):
                    state = "held"
                else:
                    state = "pending"
                db.execute(
                    "INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at,"
                    " state, ordering_key) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (event_id, subscriber) DO UPDATE SET"
                    " state = excluded.state, attempts = 0,"
                    " next_attempt_at = excluded.next_attempt_at, finished_at = NULL,"
                    " lease_until = NULL, lease_owner = NULL, ordering_key = excluded.ordering_key",
                    (event_id, subscriber, now, now, state, key),
                )
            return len(subscribers)

        return await self._write(job)

    async def event_subscribers(self, event_id: str) -> Sequence[str]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT subscriber FROM deliveries WHERE event_id = ? ORDER BY id", (event_id,)
            ).fetchall()
        )
        return [row[0] for row in rows]

    async def delivery_backlog(self) -> dict[str, Backlog]:
        def query(db: sqlite3.Connection) -> dict[str, Backlog]:
            pending = {
                row[0]: (int(row[1]), float(row[2]))
                for row in db.execute(
                    "SELECT subscriber, COUNT(*), MIN(created_at) FROM deliveries"
                    " WHERE state = 'pending' GROUP BY subscriber"
                )
            }
            held = {
                row[0]: (int(row[1]), float(row[2]))
                for row in db.execute(
                    "SELECT subscriber, COUNT(*), MIN(created_at) FROM deliveries"
                    " INDEXED BY deliveries_held WHERE state = 'held' GROUP BY subscriber"
                )
            }
            backlog = {}
            for name in pending.keys() | held.keys():
                count, oldest = pending.get(name, (0, float("inf")))
                held_count, held_oldest = held.get(name, (0, float("inf")))
                backlog[name] = Backlog(
                    count=count + held_count,
                    held=held_count,
                    oldest_created_at=min(oldest, held_oldest),
                )
            return backlog

        return await self._read(query)

    async def subscriber_circuits(self) -> dict[str, tuple[int, bytes]]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT subscriber, version, state FROM subscriber_circuits"
            ).fetchall()
        )
        return {row[0]: (int(row[1]), bytes(row[2])) for row in rows}

    async def save_subscriber_circuit(
        self, subscriber: str, state: bytes, *, expected_version: int | None
    ) -> bool:
        def job(db: sqlite3.Connection) -> bool:
            now = self._clock()
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

        return await self._write(job)

    async def purge_expired(self, *, before: float, after: float, limit: int) -> Purged:
        def job(db: sqlite3.Connection) -> Purged:
            # The oldest events first, from `events_received`; whether each may go is one look
            # into the (event_id, subscriber) index. Kept ones are passed over by `after`.
            rows = db.execute(
                "SELECT e.id, e.received_at, NOT EXISTS (SELECT 1 FROM deliveries d"
                " WHERE d.event_id = e.id AND d.state <> 'delivered')"
                " FROM events e INDEXED BY events_received"
                " WHERE e.received_at > ? AND e.received_at < ?"
                " ORDER BY e.received_at LIMIT ?",
                (after, before, limit),
            ).fetchall()
            expired = [(row[0],) for row in rows if row[2]]
            for chunk in _chunks(db, expired):
                marks = ",".join("?" * len(chunk))
                ids = [value for (value,) in chunk]
                # Children first: the foreign keys are enforced.
                db.execute(
                    "DELETE FROM attempts WHERE delivery_id IN"  # noqa: S608 - only "?" marks
                    f" (SELECT id FROM deliveries WHERE event_id IN ({marks}))",
                    ids,
                )
                db.execute(f"DELETE FROM deliveries WHERE event_id IN ({marks})", ids)  # noqa: S608
                db.execute(f"DELETE FROM events WHERE id IN ({marks})", ids)  # noqa: S608
            released = db.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
                " INDEXED BY quarantine_released WHERE released_as IS NOT NULL"
                " ORDER BY released_at LIMIT ?)",
                (limit,),
            ).rowcount
            stale = db.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
                " INDEXED BY quarantine_waiting WHERE released_as IS NULL AND received_at < ?"
                " ORDER BY received_at LIMIT ?)",
                (before, max(0, limit - released)),
            ).rowcount
            return Purged(
                events=len(expired),
                quarantined=released + stale,
                scanned_to=float(rows[-1][1]) if len(rows) == limit else None,
            )

        return await self._write(job)

    # Operators: reads on the reader connection, never in ingest's way.

    async def search_events(
        self, filters: EventFilter, *, after: tuple[float, str] | None, limit: int
    ) -> Sequence[EventRow]:
        conditions: list[str] = []
        values: list[Any] = []
        for condition, value in (
            ("source = ?", filters.source),
            ("type GLOB ?", filters.type_glob),
            ("subject = ?", filters.subject),
            ("status = ?", filters.status),
            ("received_at >= ?", filters.since),
            ("received_at < ?", filters.until),
        ):
            if value is not None:
                conditions.append(condition)
                values.append(value)
        if after is not None:
            # The keyset: strictly past the last item of the previous page in (received_at, id)
            # order; the first term lets SQLite seek the index instead of scanning for the rest.
            conditions.append("received_at <= ? AND (received_at < ? OR id < ?)")
            values += [after[0], after[0], after[1]]
        index = "events_subject" if filters.subject is not None else "events_received"
        where = " AND ".join(conditions) or "1"

        def query(db: sqlite3.Connection) -> list[EventRow]:
            rows = db.execute(
                "SELECT id, source, type, subject, received_at, body"  # noqa: S608 - fixed parts
                f" FROM events INDEXED BY {index} WHERE {where}"
                " ORDER BY received_at DESC, id DESC LIMIT ?",
                [*values, limit],
            ).fetchall()
            states: dict[str, dict[str, DeliveryState]] = {row[0]: {} for row in rows}
            for chunk in _chunks(db, [(row[0],) for row in rows]):
                marks = ",".join("?" * len(chunk))
                for event_id, subscriber, state in db.execute(
                    "SELECT event_id, subscriber, state FROM deliveries"  # noqa: S608 - "?"
                    f" WHERE event_id IN ({marks}) ORDER BY id",
                    [value for (value,) in chunk],
                ):
                    states[event_id][subscriber] = state
            return [as_struct.event_row(row, states[row[0]]) for row in rows]

        return await self._read(query)

    async def event_record(self, event_id: str) -> EventRecord | None:
        def query(db: sqlite3.Connection) -> EventRecord | None:
            event = db.execute(
                "SELECT received_at, body FROM events WHERE id = ?", (event_id,)
            ).fetchone()
            if event is None:
                return None
            deliveries = db.execute(
                "SELECT id, subscriber, state, next_attempt_at FROM deliveries"
                " WHERE event_id = ? ORDER BY id",
                (event_id,),
            ).fetchall()
            attempts = db.execute(
                "SELECT a.delivery_id, a.started_at, a.duration, a.outcome, a.status_code,"
                " a.error, a.response_excerpt FROM attempts a"
                " JOIN deliveries d ON d.id = a.delivery_id WHERE d.event_id = ? ORDER BY a.id",
                (event_id,),
            ).fetchall()
            return as_struct.event_record(event_id, event, deliveries, attempts)

        return await self._read(query)

    async def dead_letter_page(
        self, *, subscriber: str | None, after: tuple[float, int] | None, limit: int
    ) -> Sequence[DeadLetter]:
        dead_at, delivery_id = after if after is not None else (None, None)
        rows = await self._read(
            lambda db: db.execute(
                "SELECT id, event_id, subscriber, attempts, last_error, finished_at"
                " FROM deliveries INDEXED BY deliveries_dead"
                " WHERE state = 'dead' AND (? IS NULL OR subscriber = ?)"
                " AND (? IS NULL OR finished_at < ? OR (finished_at = ? AND id < ?))"
                " ORDER BY finished_at DESC, id DESC LIMIT ?",
                (subscriber, subscriber, dead_at, dead_at, dead_at, delivery_id, limit),
            ).fetchall()
        )
        return [as_struct.dead_letter(row) for row in rows]

    async def dead_counts(self) -> dict[str, int]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT subscriber, COUNT(*) FROM deliveries INDEXED BY deliveries_dead"
                " WHERE state = 'dead' GROUP BY subscriber"
            ).fetchall()
        )
        return {str(row[0]): int(row[1]) for row in rows}

    async def paused_subscribers(self) -> set[str]:
        rows = await self._read(
            lambda db: db.execute("SELECT subscriber FROM subscriber_pauses").fetchall()
        )
        return {str(row[0]) for row in rows}

    async def set_paused(self, subscriber: str, paused: bool) -> None:
        def job(db: sqlite3.Connection) -> None:
            if paused:
                db.execute(
                    "INSERT INTO subscriber_pauses (subscriber, paused_at) VALUES (?, ?)"
                    " ON CONFLICT (subscriber) DO NOTHING",
                    (subscriber, self._clock()),
                )
            else:
                db.execute("DELETE FROM subscriber_pauses WHERE subscriber = ?", (subscriber,))

        await self._write(job)

    async def stats(self) -> dict[str, int]:
        def job(db: sqlite3.Connection) -> dict[str, int]:
            counts = {"events": db.execute("SELECT COUNT(*) FROM events").fetchone()[0]}
            for state in ("pending", "held", "delivered", "dead"):
                counts[state] = 0
            for state, count in db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
                counts[state] = count
            counts["quarantined"] = db.execute(
                "SELECT COUNT(*) FROM quarantine WHERE released_as IS NULL"
            ).fetchone()[0]
            return counts

        return await self._read(job)


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


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    name = column.split()[0]
    if all(row[1] != name for row in db.execute(f"PRAGMA table_info({table})")):
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


def _insert_events(db: sqlite3.Connection, events: list[NewEvent]) -> list[AcceptOutcome]:
    """Insert events and their deliveries; for each, accepted or duplicate (of a stored event,
    or of an earlier copy in the same batch: 50 concurrent retries arrive together).

    Each statement is one `sqlite3_step` (the RETURNING clause or executemany would be one per
    row), and the writer thread waits for the GIL after every step: a statement per row would
    hand the GIL back and forth with the event loop once per event. The batch runs inside
    BEGIN IMMEDIATE, so nobody else writes between the duplicate check and the insert.
    """
    stored: set[str] = set()
    for chunk in _chunks(db, [(event.id,) for event in events]):
        marks = ",".join("?" * len(chunk))
        stored.update(
            row[0]
            for row in db.execute(
                f"SELECT id FROM events WHERE id IN ({marks})",  # noqa: S608 - only "?" marks
                [value for row in chunk for value in row],
            )
        )
    outcomes: list[AcceptOutcome] = []
    accepted: list[NewEvent] = []
    for event in events:
        if event.id in stored:
            outcomes.append("duplicate")
            continue
        stored.add(event.id)  # a later copy in this batch is a duplicate
        outcomes.append("accepted")
        accepted.append(event)
    # An ordered delivery is held when its key already has one pending or held: stored before
    # (one look per key), or earlier in this batch (batch order is commit order).
    busy = _busy_keys(
        db,
        list(dict.fromkeys(pair for event in accepted for pair in _ordering_pairs(event))),
    )
    new_events: list[tuple[str, str, str, float, bytes, str | None, str | None]] = []
    deliveries: list[tuple[str, str, float, float, str, str | None]] = []
    for event in accepted:
        new_events.append(
            (
                event.id,
                event.source,
                event.type,
                event.received_at,
                event.body,
                event.subject,
                event.status,
            )
        )
        keys = dict(_ordering_pairs(event))
        for subscriber in event.subscribers:
            key = keys.get(subscriber)
            state = "pending"
            if key is not None:
                state = "held" if (subscriber, key) in busy else "pending"
                busy.add((subscriber, key))
            deliveries.append(
                (event.id, subscriber, event.received_at, event.received_at, state, key)
            )
    _insert_rows(db, "events (id, source, type, received_at, body, subject, status)", new_events)
    _insert_rows(
        db,
        "deliveries (event_id, subscriber, created_at, next_attempt_at, state, ordering_key)",
        deliveries,
    )
    return outcomes


def _ordering_pairs(event: NewEvent) -> list[tuple[str, str]]:
    """(subscriber, ordering key) of each of the event's ordered deliveries."""
    key = ordering_key(event.source, event.subject)
    if key is None:
        return []
    return [(subscriber, key) for subscriber in event.subscribers if subscriber in event.ordered]


def _busy_keys(db: sqlite3.Connection, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those of `pairs` (subscriber, ordering key) with a delivery pending or held: two index
    seeks per pair (deliveries_ordered, deliveries_held), one statement per chunk."""
    busy: set[tuple[str, str]] = set()
    for chunk in _chunks(db, pairs):
        rows = ",".join(["(?, ?)"] * len(chunk))
        busy.update(
            (str(row[0]), str(row[1]))
            for row in db.execute(
                f"WITH wanted (subscriber, ordering_key) AS (VALUES {rows})"  # noqa: S608
                " SELECT w.subscriber, w.ordering_key FROM wanted w WHERE EXISTS"
                " (SELECT 1 FROM deliveries d INDEXED BY deliveries_ordered"
                " WHERE d.state = 'pending' AND d.subscriber = w.subscriber"
                " AND d.ordering_key = w.ordering_key)"
                " OR EXISTS (SELECT 1 FROM deliveries d INDEXED BY deliveries_held"
                " WHERE d.state = 'held' AND d.subscriber = w.subscriber"
                " AND d.ordering_key = w.ordering_key)",
                [value for pair in chunk for value in pair],
            )
        )
    return busy


def _release_next(db: sqlite3.Connection, pairs: list[tuple[str, str]], now: float) -> None:
    """Make the first held delivery (in commit order: id) of each (subscriber, ordering key)
    pending, due `now`, unless one of that key is pending already. Called in the transaction
    that settled the key's pending delivery, so the next one is claimable the moment it
    commits."""
    for chunk in _chunks(db, pairs, reserved=1):
        rows = ",".join(["(?, ?)"] * len(chunk))
        db.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ? WHERE id IN"  # noqa: S608
            " (SELECT (SELECT d.id FROM deliveries d INDEXED BY deliveries_held"
            " WHERE d.state = 'held' AND d.subscriber = r.column1"
            " AND d.ordering_key = r.column2 ORDER BY d.id LIMIT 1)"
            f" FROM (VALUES {rows}) r WHERE NOT EXISTS (SELECT 1 FROM deliveries p"
            " INDEXED BY deliveries_ordered WHERE p.state = 'pending'"
            " AND p.subscriber = r.column1 AND p.ordering_key = r.column2))",
            [now, *(value for pair in chunk for value in pair)],
        )


def _record_attempts(
    db: sqlite3.Connection, records: list[tuple[Attempt, Decision, int]], now: float
) -> list[bool]:
    """Record attempts and move their deliveries on as decided: delivered, pending a retry, or
    dead; for each record, whether it applied. Set-based, as `_insert_events` and for the same
    reason.

    A record applies only while its lease token still holds the lease of a pending delivery
    (fencing): a worker whose lease ran out and was claimed again (a new token), whose lease
    was given back (no lease), or which recorded already (that releases the lease) changes
    nothing. Which ones hold is read first, in the same BEGIN IMMEDIATE transaction, so nothing
    changes between that read and the writes. A delivered or dead ordered delivery releases
    the next of its key (`_release_next`), due `now` by the store's clock.
    """
    held: set[tuple[int, int]] = set()
    keys: dict[int, tuple[str, str]] = {}
    for chunk in _chunks(db, [(attempt.delivery_id,) for attempt, _, _ in records]):
        marks = ",".join("?" * len(chunk))
        for row in db.execute(
            "SELECT id, lease_token, subscriber, ordering_key FROM deliveries"  # noqa: S608
            f" WHERE state = 'pending' AND lease_until IS NOT NULL AND id IN ({marks})",
            [value for (value,) in chunk],
        ):
            held.add((int(row[0]), int(row[1])))
            if row[3] is not None:
                keys[int(row[0])] = (str(row[2]), str(row[3]))
    applied: list[bool] = []
    for attempt, _, lease_token in records:
        key = (attempt.delivery_id, lease_token)
        applied.append(key in held)
        held.discard(key)  # one record per lease
    records = [record for record, ok in zip(records, applied, strict=True) if ok]
    _insert_rows(
        db,
        "attempts (delivery_id, started_at, duration, outcome, status_code, error,"
        " response_excerpt)",
        [
            (
                attempt.delivery_id,
                attempt.started_at,
                attempt.duration,
                attempt.outcome,
                attempt.status_code,
                attempt.error,
                attempt.response_excerpt,
            )
            for attempt, _, _ in records
        ],
    )
    updates: list[tuple[Any, ...]] = []
    for attempt, decision, lease_token in records:
        finished = attempt.started_at + attempt.duration
        if isinstance(decision, RetryAt):
            state, next_at, finished_at = "pending", decision.at, None
        elif isinstance(decision, Delivered):
            state, next_at, finished_at = "delivered", None, finished
        else:
            state, next_at, finished_at = "dead", None, finished
        updates.append(
            (attempt.delivery_id, lease_token, state, next_at, attempt.error, finished_at)
        )
    for chunk in _chunks(db, updates):
        rows = ",".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
        # One row per id (one record per lease, above); the token and state conditions repeat
        # the check above in the statement that writes.
        db.execute(
            "WITH outcome (id, token, state, next_at, error, finished_at) AS"  # noqa: S608
            f" (VALUES {rows})"
            " UPDATE deliveries SET state = outcome.state, attempts = attempts + 1,"
            " next_attempt_at = COALESCE(outcome.next_at, next_attempt_at), lease_until = NULL,"
            " lease_owner = NULL, last_error = outcome.error, finished_at = outcome.finished_at"
            " FROM outcome WHERE deliveries.id = outcome.id"
            " AND deliveries.lease_token = outcome.token AND deliveries.state = 'pending'"
            " AND deliveries.lease_until IS NOT NULL",
            [value for row in chunk for value in row],
        )
    settled = [
        keys[attempt.delivery_id]
        for attempt, decision, _ in records
        if not isinstance(decision, RetryAt) and attempt.delivery_id in keys
    ]
    _release_next(db, list(dict.fromkeys(settled)), now)
    return applied


def _insert_rows(db: sqlite3.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
    """One multi-row INSERT per chunk of rows (a single step each)."""
    for chunk in _chunks(db, rows):
        marks = ",".join(["(" + ",".join("?" * len(chunk[0])) + ")"] * len(chunk))
        db.execute(
            f"INSERT INTO {table} VALUES {marks}",  # noqa: S608 - our table names, "?" marks
            [value for row in chunk for value in row],
        )


def _chunks(
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


def _run_job(
    db: sqlite3.Connection, pending: _Pending
) -> tuple[_Pending, Any, BaseException | None]:
    """A general write in its own savepoint, so that its failure undoes only itself."""
    assert pending.job is not None
    db.execute("SAVEPOINT job")
    try:
        result = pending.job(db)
    except Exception as error:  # handed to the job's caller, whatever it is
        db.execute("ROLLBACK TO job")
        db.execute("RELEASE job")
        if isinstance(error, sqlite3.Error):
            error = StoreUnavailable(f"database write failed: {error}")
        return pending, None, error
    db.execute("RELEASE job")
    return pending, result, None


def _roll_back(connection: sqlite3.Connection) -> bool:
    """Undo a failed batch's open transaction; False when the connection cannot (it is
    unusable: closed, or its database gone)."""
    try:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        connection.execute("SELECT 1").fetchone()
    except Exception:
        return False
    return True


def _open_failure(path: Path, error: BaseException) -> Exception:
    if isinstance(error, StoreSchemaError):
        return error
    return StoreUnavailable(f"cannot open {path}: {error}")


def _hand_back(results: list[tuple[_Pending, Any, BaseException | None]]) -> None:
    """Answer each write's caller on its own event loop: one wake-up per loop, not per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Any, BaseException | None]]]
    by_loop = {}
    for entry in results:
        by_loop.setdefault(entry[0].loop, []).append(entry)
    running = _running_loop()  # None on the writer thread
    for loop, entries in by_loop.items():
        if loop is running:  # a writer on the event loop: no wake-up needed
            _resolve(entries)
            continue
        # A closed loop has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, entries)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve(entries: list[tuple[_Pending, Any, BaseException | None]]) -> None:
    for pending, result, error in entries:
        if pending.future.done():
            continue  # the caller gave up (cancelled); the write stands regardless
        if error is None:
            pending.future.set_result(result)
        else:
            pending.future.set_exception(error)

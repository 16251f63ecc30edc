"""The embedded store: SQLite in WAL mode with `synchronous=FULL`, and group commit.

Durability costs one fsync per commit. Committing each request alone caps ingest at the disk's
fsync rate (about 3,800/s here); instead, one writer thread owns the connection and drains
every write that is waiting into one transaction. Under load a commit carries hundreds of
events for the price of one fsync; idle, a lone request commits at once. Each request still
gets its own answer, because each job runs in its own savepoint.

The writer queue is bounded: when the disk cannot keep up, `accept` raises StoreUnavailable
(503) instead of letting memory grow.

Several processes may open one database (`serve --workers N`, and the CLI next to a running
gateway): their writers take turns through a lock file (`_WriterLock`), and WAL lets everyone
read meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from gateway.store.base import (
    AcceptOutcome,
    Attempt,
    ClaimedDelivery,
    DeadLetter,
    NewEvent,
    QuarantinedPayload,
    Store,
    StoreUnavailable,
)

__all__ = ["SQLiteStore", "sqlite_path_from_url"]

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    type        TEXT NOT NULL,
    received_at REAL NOT NULL,
    body        BLOB NOT NULL
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
    last_error      TEXT,
    finished_at     REAL,
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
CREATE TABLE IF NOT EXISTS subscriber_circuits (
    subscriber TEXT PRIMARY KEY,
    state      BLOB NOT NULL,
    updated_at REAL NOT NULL
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
"""

# Writes waiting for the writer thread. At ~10,000 events/s this is several seconds of backlog:
# past it, the disk is not keeping up and 503 is the honest answer.
MAX_PENDING_WRITES = 20_000
# Jobs per transaction: large enough to amortize the fsync, small enough to answer promptly.
MAX_BATCH = 1_000


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


_STOP = object()


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
    def __init__(self, path: Path) -> None:
        self.path = path
        self._queue: queue.Queue[_Pending | object] = queue.Queue(MAX_PENDING_WRITES)
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._commit_watchers: list[Callable[[int], None]] = []
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    def watch_commits(self, callback: Callable[[int], None]) -> None:
        self._commit_watchers.append(callback)

    # Life cycle.

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._writer, name="sqlite-writer", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._opened.wait)
        if self._open_error is not None:
            raise StoreUnavailable(f"cannot open {self.path}: {self._open_error}")

    async def close(self) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsync'd at every commit, so a commit that returned survives power loss.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=10000")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    def _writer(self) -> None:
        try:
            lock = _WriterLock(self.path)
        except OSError as error:
            self._open_error = error
            self._opened.set()
            return
        try:
            with lock:
                connection = self._connect()
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RuntimeError(f"database schema {version} is newer than this gateway's")
                connection.executescript(SCHEMA)
                connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError, RuntimeError) as error:
            lock.close()
            self._open_error = error
            self._opened.set()
            return
        self._opened.set()
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        self._queue.put(_STOP)  # finish this batch, then stop
                        break
                    batch.append(item)
                self._run_batch(connection, lock, batch)  # type: ignore[arg-type]
        finally:
            connection.close()
            lock.close()

    def _run_batch(
        self, connection: sqlite3.Connection, lock: _WriterLock, batch: list[_Pending]
    ) -> None:
        # Every statement is a round trip through the GIL, which the event loop is busy with:
        # a batch costs a handful of statements however many requests it carries.
        accepts = [pending for pending in batch if pending.kind == "accept"]
        attempts = [pending for pending in batch if pending.kind == "attempt"]
        jobs = [pending for pending in batch if pending.kind == "job"]
        results: list[tuple[_Pending, Any, BaseException | None]]
        try:
            with lock:
                results = self._apply(connection, accepts, attempts, jobs)
        except sqlite3.Error as error:
            # The commit (or the disk under it) failed: nothing of this batch is durable.
            unavailable = StoreUnavailable(f"database write failed: {error}")
            results = [(pending, None, unavailable) for pending in batch]
        else:
            for watcher in self._commit_watchers:
                watcher(len(batch))
        # One wake-up per event loop per batch, not one per write.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Any, BaseException | None]]]
        by_loop = {}
        for entry in results:
            by_loop.setdefault(entry[0].loop, []).append(entry)
        for loop, entries in by_loop.items():
            # A closed loop has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, entries)

    @staticmethod
    def _apply(
        connection: sqlite3.Connection,
        accepts: list[_Pending],
        attempts: list[_Pending],
        jobs: list[_Pending],
    ) -> list[tuple[_Pending, Any, BaseException | None]]:
        """One transaction for the whole batch; rolled back (and raising) if any of it fails."""
        results: list[tuple[_Pending, Any, BaseException | None]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            if accepts:
                outcomes = _insert_events(connection, [pending.payload for pending in accepts])
                results += [
                    (p, outcome, None) for p, outcome in zip(accepts, outcomes, strict=True)
                ]
            if attempts:
                _record_attempts(connection, [pending.payload for pending in attempts])
                results += [(pending, None, None) for pending in attempts]
            for pending in jobs:
                results.append(_run_job(connection, pending))
            connection.execute("COMMIT")
        except sqlite3.Error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return results

    async def _submit(self, pending: _Pending) -> Any:
        if self._thread is None:
            raise StoreUnavailable("the store is not open")
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise StoreUnavailable("too many writes waiting for the disk") from None
        return await pending.future

    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        result: T = await self._submit(_Pending(asyncio.get_running_loop(), job=job))
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
                if self._reader is None:
                    self._reader = self._connect()
                try:
                    return query(self._reader)
                except sqlite3.Error as error:
                    raise StoreUnavailable(f"database read failed: {error}") from None

        return await asyncio.to_thread(run)

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    # Ingress.

    async def accept(self, event: NewEvent) -> AcceptOutcome:
        outcome: AcceptOutcome = await self._submit(
            _Pending(asyncio.get_running_loop(), kind="accept", payload=event)
        )
        return outcome

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

        return await self._write(job)

    async def quarantined(self) -> Sequence[QuarantinedPayload]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT id, source, received_at, body, headers, verification, error"
                " FROM quarantine WHERE released_as IS NULL ORDER BY id"
            ).fetchall()
        )
        return [
            QuarantinedPayload(
                id=row[0],
                source=row[1],
                received_at=row[2],
                body=bytes(row[3]),
                headers=msgspec.json.decode(row[4], type=dict[str, str]),
                verification=row[5],
                error=row[6],
            )
            for row in rows
        ]

    async def release_quarantined(self, quarantine_id: int, event: NewEvent) -> AcceptOutcome:
        def job(db: sqlite3.Connection) -> AcceptOutcome:
            (outcome,) = _insert_events(db, [event])
            db.execute(
                "UPDATE quarantine SET released_as = ?, released_at = ? WHERE id = ?",
                (event.id, time.time(), quarantine_id),
            )
            return outcome

        return await self._write(job)

    async def note_quarantine_error(self, quarantine_id: int, error: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE quarantine SET error = ? WHERE id = ?", (error, quarantine_id)
            )
        )

    # Delivery.

    async def claim_due(
        self,
        *,
        subscriber: str,
        now: float,
        limit: int,
        lease_seconds: float,
        owner: str,
    ) -> Sequence[ClaimedDelivery]:
        def job(db: sqlite3.Connection) -> list[ClaimedDelivery]:
            rows = db.execute(
                "SELECT d.id, d.event_id, d.subscriber, d.attempts, d.created_at, e.body"
                " FROM deliveries d JOIN events e ON e.id = d.event_id"
                " WHERE d.state = 'pending' AND d.subscriber = ? AND d.next_attempt_at <= ?"
                " AND (d.lease_until IS NULL OR d.lease_until < ?)"
                " ORDER BY d.next_attempt_at, d.id LIMIT ?",
                (subscriber, now, now, limit),
            ).fetchall()
            for chunk in _chunks(db, [(row[0],) for row in rows], reserved=2):
                marks = ",".join("?" * len(chunk))
                db.execute(
                    "UPDATE deliveries SET lease_until = ?, lease_owner = ?"  # noqa: S608 - "?"
                    f" WHERE id IN ({marks})",
                    [now + lease_seconds, owner, *(value for (value,) in chunk)],
                )
            return [
                ClaimedDelivery(
                    delivery_id=row[0],
                    event_id=row[1],
                    subscriber=row[2],
                    attempts=row[3],
                    created_at=row[4],
                    body=bytes(row[5]),
                )
                for row in rows
            ]

        return await self._write(job)

    async def lease_owners(self) -> Sequence[str]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT DISTINCT lease_owner FROM deliveries"
                " WHERE state = 'pending' AND lease_owner IS NOT NULL"
            ).fetchall()
        )
        return [str(row[0]) for row in rows]

    async def release_leases(self, owner: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL"
                " WHERE lease_owner = ? AND state = 'pending'",
                (owner,),
            )
        )

    async def record_attempt(
        self,
        attempt: Attempt,
        *,
        next_attempt_at: float | None = None,
        dead: bool = False,
    ) -> None:
        await self._submit(
            _Pending(
                asyncio.get_running_loop(),
                kind="attempt",
                payload=(attempt, next_attempt_at, dead),
            )
        )

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

    async def dead_letters(self, *, subscriber: str | None = None) -> Sequence[DeadLetter]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT id, event_id, subscriber, attempts, last_error, finished_at"
                " FROM deliveries WHERE state = 'dead' AND (? IS NULL OR subscriber = ?)"
                " ORDER BY finished_at, id",
                (subscriber, subscriber),
            ).fetchall()
        )
        return [
            DeadLetter(
                delivery_id=row[0],
                event_id=row[1],
                subscriber=row[2],
                attempts=row[3],
                last_error=row[4],
                dead_at=row[5],
            )
            for row in rows
        ]

    async def redrive(
        self,
        *,
        now: float,
        subscriber: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        def job(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                " finished_at = NULL, lease_until = NULL, lease_owner = NULL"
                " WHERE state = 'dead' AND (? IS NULL OR subscriber = ?)"
                " AND (? IS NULL OR finished_at >= ?) AND (? IS NULL OR finished_at <= ?)",
                (now, subscriber, subscriber, since, since, until, until),
            )
            return cursor.rowcount

        return await self._write(job)

    async def replay(self, event_id: str, subscribers: Sequence[str], *, now: float) -> int | None:
        def job(db: sqlite3.Connection) -> int | None:
            if db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is None:
                return None
            db.executemany(
                "INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (event_id, subscriber) DO UPDATE SET"
                " state = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at,"
                " finished_at = NULL, lease_until = NULL, lease_owner = NULL",
                [(event_id, subscriber, now, now) for subscriber in subscribers],
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

    async def delivery_backlog(self) -> dict[str, tuple[int, float]]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT subscriber, COUNT(*), MIN(created_at) FROM deliveries"
                " WHERE state = 'pending' GROUP BY subscriber"
            ).fetchall()
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    async def subscriber_circuits(self) -> dict[str, bytes]:
        rows = await self._read(
            lambda db: db.execute("SELECT subscriber, state FROM subscriber_circuits").fetchall()
        )
        return {row[0]: bytes(row[1]) for row in rows}

    async def save_subscriber_circuit(self, subscriber: str, state: bytes) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO subscriber_circuits (subscriber, state, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (subscriber) DO UPDATE SET state = excluded.state,"
                " updated_at = excluded.updated_at",
                (subscriber, state, time.time()),
            )
        )

    async def stats(self) -> dict[str, int]:
        def job(db: sqlite3.Connection) -> dict[str, int]:
            counts = {"events": db.execute("SELECT COUNT(*) FROM events").fetchone()[0]}
            for state in ("pending", "delivered", "dead"):
                counts[state] = 0
            for state, count in db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
                counts[state] = count
            counts["quarantined"] = db.execute(
                "SELECT COUNT(*) FROM quarantine WHERE released_as IS NULL"
            ).fetchone()[0]
            return counts

        return await self._read(job)


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
    new_events: list[tuple[str, str, str, float, bytes]] = []
    deliveries: list[tuple[str, str, float, float]] = []
    for event in events:
        if event.id in stored:
            outcomes.append("duplicate")
            continue
        stored.add(event.id)  # a later copy in this batch is a duplicate
        outcomes.append("accepted")
        new_events.append((event.id, event.source, event.type, event.received_at, event.body))
        deliveries += [
            (event.id, subscriber, event.received_at, event.received_at)
            for subscriber in event.subscribers
        ]
    _insert_rows(db, "events (id, source, type, received_at, body)", new_events)
    _insert_rows(db, "deliveries (event_id, subscriber, created_at, next_attempt_at)", deliveries)
    return outcomes


def _record_attempts(
    db: sqlite3.Connection, records: list[tuple[Attempt, float | None, bool]]
) -> None:
    """Record attempts and move their deliveries on: delivered, pending a retry, or dead.
    Set-based, as `_insert_events` and for the same reason."""
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
    for attempt, next_attempt_at, dead in records:
        finished = attempt.started_at + attempt.duration
        if attempt.outcome == "delivered":
            state, next_at = "delivered", None
        elif dead or next_attempt_at is None:
            state, next_at = "dead", None
        else:
            state, next_at = "pending", next_attempt_at
        finished_at = None if state == "pending" else finished
        updates.append((attempt.delivery_id, state, next_at, attempt.error, finished_at))
    for chunk in _chunks(db, updates):
        rows = ",".join(["(?, ?, ?, ?, ?)"] * len(chunk))
        # A delivery has at most one attempt in flight (its lease), so one row per id.
        db.execute(
            "WITH outcome (id, state, next_at, error, finished_at) AS"  # noqa: S608 - "?" marks
            f" (VALUES {rows})"
            " UPDATE deliveries SET state = outcome.state, attempts = attempts + 1,"
            " next_attempt_at = COALESCE(outcome.next_at, next_attempt_at), lease_until = NULL,"
            " lease_owner = NULL, last_error = outcome.error, finished_at = outcome.finished_at"
            " FROM outcome WHERE deliveries.id = outcome.id",
            [value for row in chunk for value in row],
        )


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


def _resolve(entries: list[tuple[_Pending, Any, BaseException | None]]) -> None:
    for pending, result, error in entries:
        if pending.future.done():
            continue  # the caller gave up (cancelled); the write stands regardless
        if error is None:
            pending.future.set_result(result)
        else:
            pending.future.set_exception(error)

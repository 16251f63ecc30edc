"""SQLite's writer: one thread owns the write connection and drains every write that is waiting
into one transaction (group commit).

Durability costs one fsync per commit. Committing each request alone caps ingest at the disk's
fsync rate (about 3,800/s here); instead, under load a commit carries hundreds of events for the
price of one fsync; idle, a lone request commits at once. Each request still gets its own
answer: the hot path's two writes (accepting events, recording attempts) are applied set-based
with one answer each, and anything else is a job in its own savepoint.

Writes wait in two rooms (`Rooms`, gateway/store/group_commit.py, shared with PostgreSQL's
writer). Ingest's (`accept`, `quarantine`) is bounded: when the disk cannot keep up, `accept`
raises StoreUnavailable (503) instead of letting memory grow. The dispatcher's claims and
attempt records (and circuits, operators' commands) have their own, which ingest cannot fill.
Nothing a batch raises stops the writer: its callers get StoreUnavailable and the next batch
goes on; a writer that cannot go on (its connection unusable) marks the store unavailable
(`Writer.failure`), so every caller and /readyz hear it at once rather than wait for an answer
that will never come.

Several processes may open one database (`serve --workers N`, and the CLI next to a running
gateway): their writers take turns through a lock file (`WriterLock`), and WAL lets everyone
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gateway.store.base import StoreSchemaError, StoreUnavailable
from gateway.store.group_commit import COMMIT_GAP_SECONDS, Rooms, hand_back
from gateway.store.sqlite.ingest import insert_events
from gateway.store.sqlite.queue import record_attempts
from gateway.store.sqlite.schema import bring_up_to_date

__all__ = ["Job", "Pending", "Rooms", "Writer", "WriterLock"]

log = structlog.get_logger("gateway.store")

Job = Callable[[sqlite3.Connection], Any]

# Jobs per transaction: large enough to amortize the fsync, small enough to answer promptly.
MAX_BATCH = 1_000
# The interpreter's switch interval in a process whose store has a writer thread (`open`).
WRITER_SWITCH_INTERVAL_SECONDS = 0.0005


class Pending:
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


class WriterLock:
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


class Writer:
    """The writer thread of one store: started by `start` (which opens the database and brings
    its schema up to date, under the writers' lock), handed writes by `submit`, stopped by
    `stop` once it has applied what was waiting. `failure` says why it stopped on its own (the
    store is unavailable until reopened)."""

    def __init__(
        self,
        path: Path,
        *,
        connect: Callable[[], sqlite3.Connection],
        clock: Callable[[], float],
        ingest_limit: int,
        on_commit: Callable[[int], None],
    ) -> None:
        self._path = path
        self._connect = connect
        # "Now" of the attempt records a batch applies (releases of held deliveries).
        self._clock = clock
        self._on_commit = on_commit
        self._rooms: Rooms[Pending] = Rooms(
            ingest_limit, batch_limit=MAX_BATCH, full="too many writes waiting for the disk"
        )
        self._thread: threading.Thread | None = None
        self.failure: str | None = None
        self._opened = threading.Event()
        self._open_error: BaseException | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stalled_for(self) -> float:
        """Seconds the writer has taken no write while some wait (0 when none waits)."""
        return self._rooms.stalled_for()

    async def start(self) -> None:
        # The writer thread takes the GIL back between its statements while it holds the
        # writers' lock, and every other process's writer waits for that lock meanwhile: at the
        # default 5 ms switch interval a loaded event loop kept it waiting for the GIL that
        # long, several times a commit. Measured with two workers (bench/pipeline.py, 2 CPUs):
        # end to end 1,133 and 1,661 events/s at 5 ms, 1,705 and 1,942 at 0.5 ms, interleaved.
        sys.setswitchinterval(WRITER_SWITCH_INTERVAL_SECONDS)
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._opened.wait)
        if self._open_error is not None:
            raise _open_failure(self._path, self._open_error)

    async def stop(self) -> None:
        if self._thread is None:
            return
        # Never a blocking put on the event loop: the writer finishes what is waiting, then
        # stops.
        self._rooms.close("the store is closed")
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    async def submit(self, pending: Pending, *, ingest: bool = False) -> Any:
        """Hand a write to the writer thread and wait for its answer. `ingest` writes go to the
        bounded room (StoreUnavailable at once when it is full); the others never find theirs
        full (`Rooms`)."""
        if self._thread is None:
            raise StoreUnavailable("the store is not open")
        self._rooms.put(pending, ingest=ingest)
        return await pending.future

    # The thread.

    def _open(self) -> tuple[sqlite3.Connection, WriterLock]:
        """The writer's connection, the schema brought up to date, and the lock it writes
        under."""
        lock = WriterLock(self._path)
        try:
            with lock:
                connection = self._connect()
                bring_up_to_date(connection, self._path)
        except BaseException:
            lock.close()
            raise
        return connection, lock

    def _run(self) -> None:
        try:
            connection, lock = self._open()
        except Exception as error:  # `open` waits for `_opened`: it must hear of anything
            self._open_error = error
            self._opened.set()
            return
        self._opened.set()
        batch: list[Pending] = []
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
            self._failed(error, batch)
        finally:
            self._stopped(connection, lock)

    def _failed(self, error: BaseException, batch: list[Pending]) -> None:
        log.exception("store_writer_stopped")
        if self.failure is None:
            self.failure = f"the store's writer stopped: {error!r}"
        failed = StoreUnavailable(self.failure)
        hand_back([(pending, None, failed) for pending in batch])

    def _stopped(self, connection: sqlite3.Connection, lock: WriterLock) -> None:
        if self.failure is not None:
            failed = StoreUnavailable(self.failure)
            waiting = self._rooms.abandon(self.failure)
            hand_back([(pending, None, failed) for pending in waiting])
        with contextlib.suppress(sqlite3.Error):
            connection.close()
        lock.close()

    def _run_batch(
        self, connection: sqlite3.Connection, lock: WriterLock, batch: list[Pending]
    ) -> None:
        # Every statement is a round trip through the GIL, which the event loop is busy with:
        # a batch costs a handful of statements however many requests it carries.
        accepts = [pending for pending in batch if pending.kind == "accept"]
        attempts = [pending for pending in batch if pending.kind == "attempt"]
        jobs = [pending for pending in batch if pending.kind == "job"]
        results: list[tuple[Pending, Any, BaseException | None]]
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
            self._on_commit(len(batch))
        if not usable:
            # Unavailable before anyone hears of this batch: whoever it answers and asks again
            # (/readyz included) must find the store unavailable, not a writer about to stop.
            self.failure = "the store's writer stopped: its connection cannot roll back"
            self._rooms.close(self.failure)
        hand_back(results)
        if not usable:
            raise RuntimeError(self.failure)

    def _apply(
        self,
        connection: sqlite3.Connection,
        accepts: list[Pending],
        attempts: list[Pending],
        jobs: list[Pending],
    ) -> list[tuple[Pending, Any, BaseException | None]]:
        """One transaction for the whole batch; rolled back (and raising) if any of it fails."""
        results: list[tuple[Pending, Any, BaseException | None]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            now = self._clock()
            if accepts:
                outcomes = insert_events(connection, [pending.payload for pending in accepts])
                results += [
                    (p, outcome, None) for p, outcome in zip(accepts, outcomes, strict=True)
                ]
            if attempts:
                applied = record_attempts(
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


def _run_job(db: sqlite3.Connection, pending: Pending) -> tuple[Pending, Any, BaseException | None]:
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

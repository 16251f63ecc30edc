"""Group commit in a writer thread: many callers' writes, one transaction, one WAL flush.

A database commit costs a flush of its write-ahead log whatever it carries. Callers hand their
writes to a writer thread and await their answers; the thread drains everything waiting at that
moment (up to a batch's limit; while webhooks keep coming, what arrives within
`COMMIT_GAP_SECONDS` of the last commit) and applies it in one transaction: under load a
commit carries hundreds of writes, idle a lone write commits at once. Each caller still gets its
own answer, on its own event loop (`hand_back`); a batch that fails answers every one of its
callers with the error.

The writer is a thread, not a task on the callers' loop, because a batch is a series of waits
(the disk's fsync for SQLite, round trips for PostgreSQL): on a loop busy with webhooks each
of them would wait for a turn of that loop, with the transaction open meanwhile (PostgreSQL
sessions sat `idle in transaction` for most of each batch). SQLite's writer
(gateway/store/sqlite/writer.py) runs its statements in the thread; PostgreSQL's (`GroupCommit`)
runs the store's async statements on an event loop of the thread's own, on a connection of its
own.

Writes wait in two rooms (`Rooms`). Ingest's is bounded: full, StoreUnavailable at once (a
503) rather than memory growing while the database cannot keep up. The dispatcher's writes
(attempt records) have one of their own, which ingest cannot fill: refusing an attempt record
would leave its delivery leased, and send it again once the lease ran out. A batch takes from
both, so neither starves the other (`take_batch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import structlog

from gateway.store.base import StoreUnavailable

__all__ = ["Answered", "GroupCommit", "Rooms", "hand_back", "take_batch"]

log = structlog.get_logger("gateway.store")

W = TypeVar("W")
T = TypeVar("T")

# While webhooks keep coming, a commit starts at least this long after the last one ended, so
# that the webhooks arriving meanwhile share it (`Rooms.take`: the dispatcher's writes alone do
# not wait). A commit costs about as much whatever it carries: on SQLite an fsync (about 0.45
# ms of CPU here, fsync included: committing each trickling write on its own spent 370-550 us
# of the writer's CPU per webhook at 1,000-2,300 webhooks/s, 2 cores; with this gap about
# 200 us), on PostgreSQL a transaction and a WAL flush of the server's (webhooks per commit
# 15 -> 23 under wrk, PostgreSQL's CPU per accepted event -16%). A write that finds the writer
# idle for longer commits at once: an unloaded gateway answers as fast as before, and a loaded
# one waits at most this much more.
COMMIT_GAP_SECONDS = 0.002


def take_batch(other: deque[T], ingest: deque[T], limit: int) -> list[T]:
    """The next batch of at most `limit` writes from the two rooms: the other room's first, up
    to half of it, then ingest's, then more of the other's. Neither room starves the other."""
    batch = [other.popleft() for _ in range(min(limit // 2, len(other)))]
    batch += [ingest.popleft() for _ in range(min(limit - len(batch), len(ingest)))]
    batch += [other.popleft() for _ in range(min(limit - len(batch), len(other)))]
    return batch


class Answered(Protocol):
    """A write waiting for a writer thread: the future its caller awaits, on the caller's
    loop."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


P = TypeVar("P", bound=Answered)


class Rooms(Generic[P]):
    """The writes waiting for a writer thread, in two rooms: ingest's, bounded by
    `ingest_limit`, and everyone else's, which ingest cannot fill (that room needs no bound of
    its own: the dispatcher has at most `max_in_flight` sends per subscriber, each waiting for
    its record). Every method is safe on an event loop: the lock is never held for long."""

    def __init__(self, ingest_limit: int, *, batch_limit: int, full: str) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._ingest: deque[P] = deque()
        self._other: deque[P] = deque()
        self._ingest_limit = ingest_limit
        self._batch_limit = batch_limit
        # What a caller hears when ingest's room is full ("too many writes waiting for ...").
        self._full = full
        self._closed: str | None = None
        # Since when writes have waited with none taken by the writer (None: nothing waits).
        self._waiting_since: float | None = None

    def put(self, pending: P, *, ingest: bool) -> None:
        """Queue a write (never blocks); StoreUnavailable when its room is full or closed."""
        with self._ready:
            if self._closed is not None:
                raise StoreUnavailable(self._closed)
            if not ingest:
                self._other.append(pending)
            elif len(self._ingest) < self._ingest_limit:
                self._ingest.append(pending)
            else:
                raise StoreUnavailable(self._full)
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
            # The writer waits for a first write, or gathers more until a time it keeps by
            # itself: waking it (and handing it the GIL) for every write would cost more than
            # the write.
            waiting = len(self._other) + len(self._ingest)
            if waiting == 1 or waiting >= self._batch_limit:
                self._ready.notify()

    def take(self, limit: int, not_before: float = 0.0) -> list[P] | None:
        """The next batch, waiting for one; None once closed and empty. Once an ingest write
        waits, more may join it until `not_before` (time.monotonic()), unless `limit` wait
        already. The other room's writes alone do not wait: they are the dispatcher's (a
        batch's records and its next claim, already many deliveries in one write, each on the
        path of the next send) and the processes' housekeeping, not a crowd of webhooks to
        gather into one commit."""
        with self._ready:
            while not self._other and not self._ingest:
                if self._closed is not None:
                    return None
                self._ready.wait()
            while (
                self._closed is None
                and self._ingest
                and len(self._other) + len(self._ingest) < limit
                and (left := not_before - time.monotonic()) > 0
            ):
                self._ready.wait(left)
            batch = take_batch(self._other, self._ingest, limit)
            self._waiting_since = time.monotonic() if self._other or self._ingest else None
            return batch

    def take_all(self) -> list[P]:
        """Every waiting write, leaving the rooms open (their callers are answered at once)."""
        with self._ready:
            waiting = [*self._other, *self._ingest]
            self._other.clear()
            self._ingest.clear()
            self._waiting_since = None
        return waiting

    def stalled_for(self) -> float:
        """Seconds the writer has taken no write while some wait (0 when none waits)."""
        with self._ready:
            since = self._waiting_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self, reason: str) -> None:
        """Refuse new writes from now on; the writer still takes what is waiting."""
        with self._ready:
            if self._closed is None:
                self._closed = reason
            self._ready.notify()

    def abandon(self, reason: str) -> list[P]:
        """Close and hand back every waiting write: nobody will take them."""
        with self._ready:
            if self._closed is None:
                self._closed = reason
            waiting = [*self._other, *self._ingest]
            self._other.clear()
            self._ingest.clear()
            self._ready.notify()
        return waiting


def hand_back(results: Sequence[tuple[Answered, Any, BaseException | None]]) -> None:
    """Answer each write's caller on its own event loop: one wake-up per loop, not per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Answered, Any, BaseException | None]]]
    by_loop = {}
    for entry in results:
        by_loop.setdefault(entry[0].loop, []).append(entry)
    running = _running_loop()  # the writer thread's own loop, or None
    for loop, entries in by_loop.items():
        if loop is running:  # a caller on the writer's own loop: no wake-up needed
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


def _resolve(entries: list[tuple[Answered, Any, BaseException | None]]) -> None:
    for pending, result, error in entries:
        if pending.future.done():
            continue  # the caller gave up (cancelled); the write stands regardless
        if error is None:
            pending.future.set_result(result)
        else:
            pending.future.set_exception(error)


class _Waiting(Generic[W]):
    __slots__ = ("future", "loop", "write")

    def __init__(self, write: W, loop: asyncio.AbstractEventLoop) -> None:
        self.write = write
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


class GroupCommit(Generic[W]):
    """A writer thread with an event loop of its own, applying batches of writes of type `W`.

    `apply(writes)` runs on that loop (so does whatever connection it keeps: made, used and
    closed there, by `finish` at the end) and returns one result per write; whatever it raises
    answers the whole batch (a StoreUnavailable as it is, anything else logged and turned into
    one), and the writer goes on. When `abandon_waiting(error)` says the error means the
    database is out of reach, the writes still waiting get it as well, at once: each would
    otherwise wait for a batch of its own to time out in turn. Should the thread itself stop
    (anything escaping a batch), `failure` says why and every caller, waiting or to come, gets
    StoreUnavailable: nobody waits for an answer that will never come.

    `on_commit(writes)` is called in the thread after each commit (it must be thread-safe, as
    SQLite's is). While webhooks keep coming, a batch starts `commit_gap` seconds after the
    last commit at the earliest, as SQLite's writer's do (`COMMIT_GAP_SECONDS`).
    """

    def __init__(
        self,
        apply: Callable[[Sequence[W]], Awaitable[Sequence[object]]],
        *,
        ingest_limit: int,
        max_batch: int,
        on_commit: Callable[[int], None],
        abandon_waiting: Callable[[StoreUnavailable], bool],
        finish: Callable[[], Awaitable[None]],
        name: str = "store-writer",
        commit_gap: float = COMMIT_GAP_SECONDS,
    ) -> None:
        self._apply = apply
        self._commit_gap = commit_gap
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._abandon_waiting = abandon_waiting
        self._finish = finish
        self._name = name
        self._rooms: Rooms[_Waiting[W]] = Rooms(
            ingest_limit, batch_limit=max_batch, full="too many writes waiting for the database"
        )
        self._thread: threading.Thread | None = None
        self._started = False
        self.failure: str | None = None

    def start(self) -> None:
        self._started = True
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    async def submit(self, write: W, *, ingest: bool) -> object:
        """Queue a write and wait for its answer (StoreUnavailable at once when its room is
        full, or the writer closed or stopped). A caller that gives up (cancelled) leaves the
        write to go on: it may still commit."""
        if not self._started:
            raise StoreUnavailable("the store is not open")
        waiting = _Waiting(write, asyncio.get_running_loop())
        self._rooms.put(waiting, ingest=ingest)
        return await waiting.future

    async def close(self) -> None:
        """Refuse new writes, apply those waiting, stop the thread (without blocking the
        loop)."""
        if self._thread is None:
            return
        self._rooms.close("the store is closed")
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # The thread.

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        batch: list[_Waiting[W]] = []
        committed_at = 0.0
        try:
            while (
                taken := self._rooms.take(self._max_batch, committed_at + self._commit_gap)
            ) is not None:
                batch = taken
                loop.run_until_complete(self._run_batch(batch))
                committed_at = time.monotonic()
                batch = []
        except BaseException as error:  # whatever it is, nobody may be left waiting
            log.exception("store_writer_stopped")
            self.failure = f"the store's writer stopped: {error!r}"
            failed = StoreUnavailable(self.failure)
            waiting = batch + self._rooms.abandon(self.failure)
            hand_back([(pending, None, failed) for pending in waiting])
        finally:
            try:
                loop.run_until_complete(self._finish())
            except Exception:
                log.exception("store_writer_finish_failed")
            finally:
                loop.close()

    async def _run_batch(self, batch: list[_Waiting[W]]) -> None:
        try:
            results = await self._apply([waiting.write for waiting in batch])
        except StoreUnavailable as error:
            failed = batch
            if self._abandon_waiting(error):
                failed = failed + self._rooms.take_all()
            hand_back([(pending, None, error) for pending in failed])
            return
        except Exception as error:  # a bug: its callers hear of it, the writer goes on
            log.exception("store_batch_failed", writes=len(batch))
            unavailable = StoreUnavailable(f"database write failed: {type(error).__name__}")
            hand_back([(pending, None, unavailable) for pending in batch])
            return
        # The batch is committed whatever a watcher does.
        try:
            self._on_commit(len(batch))
        except Exception:
            log.exception("commit_watcher_failed")
        hand_back([(p, result, None) for p, result in zip(batch, results, strict=True)])

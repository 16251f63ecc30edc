"""Group commit on the event loop: many callers' writes, one transaction, one WAL flush.

A database commit costs a flush of its write-ahead log whatever it carries. `GroupCommit` lets
callers hand it writes and await their answers, while one task drains everything waiting at
that moment (up to `max_batch`) and applies it with one call of `apply` (one transaction):
under load a commit carries hundreds of writes, idle a lone write commits at once. Each caller
still gets its own answer (`apply` returns one result per write, in order); a batch that fails
answers every one of its callers with the error.

Writes wait in two rooms, as in SQLite's writer: ingest's is bounded (full: StoreUnavailable at
once, a 503, rather than memory growing while the database cannot keep up); the dispatcher's
attempt records have one of their own, which ingest cannot fill (refusing an attempt record
would send its delivery again). A batch takes from both, so neither starves the other
(`take_batch`, which SQLite's writer thread takes its batches by too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from gateway.store.base import StoreUnavailable

__all__ = ["GroupCommit", "take_batch"]

log = structlog.get_logger("gateway.store")

W = TypeVar("W")
T = TypeVar("T")


def take_batch(other: deque[T], ingest: deque[T], limit: int) -> list[T]:
    """The next batch of at most `limit` writes from the two rooms: the other room's first, up
    to half of it, then ingest's, then more of the other's. Neither room starves the other."""
    batch = [other.popleft() for _ in range(min(limit // 2, len(other)))]
    batch += [ingest.popleft() for _ in range(min(limit - len(batch), len(ingest)))]
    batch += [other.popleft() for _ in range(min(limit - len(batch), len(other)))]
    return batch


class _Waiting(Generic[W]):
    __slots__ = ("future", "write")

    def __init__(self, write: W, future: asyncio.Future[object]) -> None:
        self.write = write
        self.future = future


class GroupCommit(Generic[W]):
    """One writer task applying batches of writes of type `W`.

    `apply(writes)` runs one transaction and returns one result per write; whatever it raises
    answers the whole batch (a StoreUnavailable as it is, anything else logged and turned into
    one). When `abandon_waiting(error)` says the error means the database is out of reach, the
    writes still waiting get it as well, at once: each would otherwise wait for a batch of its
    own to time out in turn.
    """

    def __init__(
        self,
        apply: Callable[[Sequence[W]], Awaitable[Sequence[object]]],
        *,
        ingest_limit: int,
        max_batch: int,
        on_commit: Callable[[int], None],
        abandon_waiting: Callable[[StoreUnavailable], bool],
    ) -> None:
        self._apply = apply
        self._ingest_limit = ingest_limit
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._abandon_waiting = abandon_waiting
        self._ingest: deque[_Waiting[W]] = deque()
        self._other: deque[_Waiting[W]] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed: str | None = "the store is not open"

    def start(self) -> None:
        self._closed = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-writer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and self._closed is None

    async def submit(self, write: W, *, ingest: bool) -> object:
        """Queue a write and wait for its answer (StoreUnavailable at once when its room is
        full or the writer closed). A caller that gives up (cancelled) leaves the write to go
        on: it may still commit."""
        if self._closed is not None:
            raise StoreUnavailable(self._closed)
        if ingest and len(self._ingest) >= self._ingest_limit:
            raise StoreUnavailable("too many writes waiting for the database")
        waiting = _Waiting(write, asyncio.get_running_loop().create_future())
        (self._ingest if ingest else self._other).append(waiting)
        self._ready.set()
        return await waiting.future

    async def close(self) -> None:
        """Refuse new writes, apply those waiting, stop the task."""
        if self._closed is None:
            self._closed = "the store is closed"
        self._ready.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        try:
            while True:
                if not self._ingest and not self._other:
                    if self._closed is not None:
                        return
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                await self._run_batch(take_batch(self._other, self._ingest, self._max_batch))
        finally:
            # Cancelled or broken: nobody may be left waiting for an answer.
            self._closed = self._closed or "the store's writer stopped"
            self._fail([*self._other, *self._ingest], StoreUnavailable(self._closed))
            self._other.clear()
            self._ingest.clear()

    async def _run_batch(self, batch: list[_Waiting[W]]) -> None:
        try:
            results = await self._apply([waiting.write for waiting in batch])
        except StoreUnavailable as error:
            self._fail(batch, error)
            if self._abandon_waiting(error):
                self._fail([*self._other, *self._ingest], error)
                self._other.clear()
                self._ingest.clear()
            return
        except Exception as error:  # a bug: its callers hear of it, the writer goes on
            log.exception("store_batch_failed", writes=len(batch))
            self._fail(batch, StoreUnavailable(f"database write failed: {type(error).__name__}"))
            return
        # The batch is committed whatever a watcher does.
        try:
            self._on_commit(len(batch))
        except Exception:
            log.exception("commit_watcher_failed")
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(result)

    @staticmethod
    def _fail(batch: Sequence[_Waiting[W]], error: BaseException) -> None:
        for waiting in batch:
            if not waiting.future.done():
                waiting.future.set_exception(error)
                # Nobody may await it any more (a caller that gave up): no "never retrieved".
                with contextlib.suppress(BaseException):
                    waiting.future.exception()

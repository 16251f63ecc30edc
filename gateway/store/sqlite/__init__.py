"""The embedded store: SQLite in WAL mode with `synchronous=FULL`, and group commit, for one
host (several processes on it may share the file).

`SQLiteStore` is the interface (gateway/store/base.py) over the modules that do the work, each a
set of functions of a connection:

- schema.py: the file (mode, pragmas), its schema and the upgrade of older files;
- writer.py: the writer thread, its two rooms and its group commit, the writers' lock;
- ingest.py: events and their deliveries, and quarantined payloads;
- queue.py: claims, leases, heartbeats, attempt records, redrive and replay;
- ordering.py: held deliveries and their release (the rule: gateway/store/ordering.py);
- subscribers.py: circuit states and pauses;
- reads.py: operators' and metrics' reads; retention.py: the purge.

Writes go to the writer thread (`Writer.submit`); reads run on a reader connection of their own
in a worker thread, which WAL lets run while the writer commits.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec
import structlog

from gateway.store.base import (
    AcceptOutcome,
    Attempt,
    AttemptRecord,
    Backlog,
    Claim,
    ClaimRequest,
    DeadLetter,
    EventFilter,
    EventRecord,
    EventRow,
    NewEvent,
    Purged,
    QuarantinedPayload,
    Store,
    StoreUnavailable,
)
from gateway.store.decisions import Decision
from gateway.store.sqlite import ingest, queue, reads, retention, schema, subscribers
from gateway.store.sqlite.schema import SCHEMA_VERSION
from gateway.store.sqlite.writer import Pending, Writer

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "sqlite_path_from_url"]

log = structlog.get_logger("gateway.store")

T = TypeVar("T")

# Ingest writes waiting for the writer thread. At ~10,000 events/s this is several seconds of
# backlog: past it, the disk is not keeping up and 503 is the honest answer.
MAX_PENDING_WRITES = 20_000
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
        self._writer = self._new_writer()
        self._commit_watchers: list[Callable[[int], None]] = []
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    def _new_writer(self) -> Writer:
        return Writer(
            self.path,
            connect=self._connect,
            clock=self._clock,
            ingest_limit=MAX_PENDING_WRITES,
            on_commit=self._tell_watchers,
        )

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
        self._writer = self._new_writer()
        await self._writer.start()

    async def close(self) -> None:
        if not self._writer.started:
            return
        await self._writer.stop()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _connect(self) -> sqlite3.Connection:
        return schema.connect(self.path)

    def _tell_watchers(self, writes: int) -> None:
        # The batch is committed whatever a watcher does: a watcher's bug must not turn
        # durable writes into errors (the provider would retry an event already stored).
        for watcher in self._commit_watchers:
            try:
                watcher(writes)
            except Exception:
                log.exception("commit_watcher_failed")

    async def _write(self, job: Callable[[sqlite3.Connection], T], *, ingest: bool = False) -> T:
        pending = Pending(asyncio.get_running_loop(), job=job)
        result: T = await self._writer.submit(pending, ingest=ingest)
        return result

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on the reader connection, in a worker thread.

        WAL lets it run while the writer commits, so a slow read (counting a million pending
        deliveries for /metrics) never holds up ingest. It sees every committed write, so every
        write that was answered before it.
        """
        if not self._writer.started:
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
        if self._writer.failure is not None:
            raise StoreUnavailable(self._writer.failure)
        if not self._writer.running:
            raise StoreUnavailable("the store's writer is not running")
        stalled = self._writer.stalled_for()
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
        pending = Pending(asyncio.get_running_loop(), kind="accept", payload=event)
        outcome: AcceptOutcome = await self._writer.submit(pending, ingest=True)
        return outcome

    async def accept_many(self, events: Sequence[NewEvent]) -> list[AcceptOutcome]:
        batch = list(events)
        if not batch:
            return []
        # One job: its savepoint commits with the writer's batch, all of it or none of it.
        return await self._write(lambda db: ingest.insert_events(db, batch), ingest=True)

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
        return await self._write(
            lambda db: ingest.quarantine(
                db,
                source=source,
                received_at=received_at,
                body=body,
                headers=encoded_headers,
                verification=verification,
                error=error,
            ),
            ingest=True,
        )

    async def quarantined(self) -> Sequence[QuarantinedPayload]:
        return await self._read(ingest.quarantined)

    async def release_quarantined(
        self, quarantine_id: int, events: Sequence[NewEvent]
    ) -> list[AcceptOutcome]:
        return await self._write(
            lambda db: ingest.release_quarantined(db, quarantine_id, events, now=time.time())
        )

    async def note_quarantine_error(self, quarantine_id: int, error: str) -> None:
        await self._write(lambda db: ingest.note_quarantine_error(db, quarantine_id, error))

    async def drop_quarantined(self, quarantine_id: int) -> bool:
        return await self._write(lambda db: ingest.drop_quarantined(db, quarantine_id))

    # Delivery.

    async def claim_due(self, request: ClaimRequest) -> Claim:
        return await self._write(lambda db: queue.claim_due(db, self._clock(), request))

    async def release_leases(self, owner: str) -> None:
        await self._write(lambda db: queue.release_leases(db, owner))

    async def heartbeat(self, owner: str) -> None:
        await self._write(lambda db: queue.heartbeat(db, owner, now=self._clock()))

    async def release_leases_of_silent_owners(self, silent_for: float) -> list[str]:
        return await self._write(
            lambda db: queue.release_leases_of_silent_owners(db, silent_for, now=self._clock())
        )

    async def record_attempt(
        self, attempt: Attempt, decision: Decision, *, lease_token: int
    ) -> bool:
        pending = Pending(
            asyncio.get_running_loop(),
            kind="attempt",
            payload=AttemptRecord(attempt, decision, lease_token),
        )
        applied: bool = await self._writer.submit(pending)
        return applied

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[bool]:
        batch = list(records)
        # A batch's records are one write: one job carrying them all, in one savepoint.
        return await self._write(lambda db: queue.record_attempts(db, batch, self._clock()))

    async def record_attempts_then_claim(
        self, records: Sequence[AttemptRecord], request: ClaimRequest
    ) -> tuple[list[bool], Claim]:
        batch = list(records)

        def job(db: sqlite3.Connection) -> tuple[list[bool], Claim]:
            now = self._clock()
            applied = queue.record_attempts(db, batch, now)
            return applied, queue.claim_due(db, now, request)

        # One write, one commit: the next batch's leases go with the last one's records.
        return await self._write(job)

    async def next_due_at(self, *, subscribers: Sequence[str]) -> float | None:
        return await self._read(lambda db: queue.next_due_at(db, subscribers))

    async def redrive(
        self,
        *,
        now: float,
        subscriber: str | None = None,
        since: float | None = None,
        until: float | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> int:
        return await self._write(
            lambda db: queue.redrive(
                db,
                now=now,
                subscriber=subscriber,
                since=since,
                until=until,
                traceparent=traceparent,
                tracestate=tracestate,
            )
        )

    async def replay(
        self,
        event_id: str,
        subscribers: Sequence[str],
        *,
        now: float,
        ordered: Collection[str] = (),
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> int | None:
        return await self._write(
            lambda db: queue.replay(
                db,
                event_id,
                subscribers,
                now=now,
                ordered=ordered,
                traceparent=traceparent,
                tracestate=tracestate,
            )
        )

    async def event_subscribers(self, event_id: str) -> Sequence[str]:
        return await self._read(lambda db: reads.event_subscribers(db, event_id))

    async def delivery_backlog(self) -> dict[str, Backlog]:
        return await self._read(reads.delivery_backlog)

    async def subscriber_circuits(self) -> dict[str, tuple[int, bytes]]:
        return await self._read(subscribers.subscriber_circuits)

    async def save_subscriber_circuit(
        self, subscriber: str, state: bytes, *, expected_version: int | None
    ) -> bool:
        return await self._write(
            lambda db: subscribers.save_subscriber_circuit(
                db, subscriber, state, expected_version=expected_version, now=self._clock()
            )
        )

    async def purge_expired(self, *, before: float, after: float, limit: int) -> Purged:
        return await self._write(
            lambda db: retention.purge_expired(db, before=before, after=after, limit=limit)
        )

    # Operators: reads on the reader connection, never in ingest's way.

    async def search_events(
        self, filters: EventFilter, *, after: tuple[float, str] | None, limit: int
    ) -> Sequence[EventRow]:
        return await self._read(
            lambda db: reads.search_events(db, filters, after=after, limit=limit)
        )

    async def event_record(self, event_id: str) -> EventRecord | None:
        return await self._read(lambda db: reads.event_record(db, event_id))

    async def dead_letter_page(
        self, *, subscriber: str | None, after: tuple[float, int] | None, limit: int
    ) -> Sequence[DeadLetter]:
        return await self._read(
            lambda db: reads.dead_letter_page(db, subscriber=subscriber, after=after, limit=limit)
        )

    async def dead_counts(self) -> dict[str, int]:
        return await self._read(reads.dead_counts)

    async def paused_subscribers(self) -> set[str]:
        return await self._read(subscribers.paused_subscribers)

    async def set_paused(self, subscriber: str, paused: bool) -> None:
        await self._write(
            lambda db: subscribers.set_paused(db, subscriber, paused, now=self._clock())
        )

    async def stats(self) -> dict[str, int]:
        return await self._read(reads.stats)

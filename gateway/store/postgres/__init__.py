"""The shared store: PostgreSQL, for several gateway nodes on one database
(docs/reference/nodes.md).

Every node runs the same code against the same tables, so every rule the SQLite store keeps
inside one writer must hold here between processes on different hosts. `PostgresStore` is the
interface (gateway/store/base.py) over the modules that do the work, each a set of functions
of a connection, each saying how its rule holds across nodes:

- schema.py: versioned migrations, run under a lock by nodes starting together;
- connection.py: the pool, the writer's own connection, bounded waits, errors and the secrets
  no message may carry;
- ingest.py: the group commit's transaction (accepts and attempt records), quarantine; the
  group commit runs in a writer thread with an event loop of its own (gateway/store/
  group_commit.py), so a batch's round trips never wait for a turn of the webhooks' loop;
- queue.py: claims under a per-subscriber lock, leases, heartbeats, attempt records, the
  clock (`finrelay_now`), redrive and replay;
- ordering.py: per-key advisory locks, held deliveries and their release (the rule:
  gateway/store/ordering.py);
- wakeups.py: NOTIFY and the LISTEN connection that wakes the dispatchers;
- subscribers.py: circuit states and pauses; reads.py (and glob.py): operators' and metrics'
  reads; retention.py: the purge.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence

import msgspec
import psycopg
import structlog

from gateway.store.base import (
    AcceptOutcome,
    Attempt,
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
from gateway.store.group_commit import GroupCommit
from gateway.store.postgres import ingest, queue, reads, retention, subscribers
from gateway.store.postgres.connection import (
    Connection,
    Database,
    Unreachable,
    WriterConnection,
)
from gateway.store.postgres.glob import glob_to_regex
from gateway.store.postgres.queue import AttemptRecord
from gateway.store.postgres.schema import SCHEMA_VERSION, migrate
from gateway.store.postgres.wakeups import NOTIFY, Listener

__all__ = ["PostgresStore", "glob_to_regex"]

log = structlog.get_logger("gateway.store")

# Ingest writes waiting for the writer: past this, 503 (as SQLite's MAX_PENDING_WRITES).
MAX_PENDING_WRITES = 20_000
# Writes per transaction: enough to share a WAL flush widely, few enough to answer promptly.
MAX_BATCH = 1_000
PING_SECONDS = 2.0


class PostgresStore(Store):
    schema_version = SCHEMA_VERSION

    def __init__(self, url: str, *, clock: Callable[[], float] | None = None) -> None:
        self._database = Database(url)
        # None: the database server's clock (finrelay_now); tests pass their own.
        self._clock = clock
        # The writer thread's: made, used and closed on that thread's loop only.
        self._writer_connection = WriterConnection(self._database)
        self._writer: GroupCommit[NewEvent | AttemptRecord] = self._new_writer()
        self._commit_watchers: list[Callable[[int], None]] = []
        self._delivery_watchers: list[Callable[[], None]] = []
        self._listener = Listener(self._database, self._delivery_watchers)

    def __repr__(self) -> str:
        return f"PostgresStore({self._database.where})"

    def _new_writer(self) -> GroupCommit[NewEvent | AttemptRecord]:
        return GroupCommit(
            self._apply_batch,
            ingest_limit=MAX_PENDING_WRITES,
            max_batch=MAX_BATCH,
            on_commit=self._tell_commit_watchers,
            abandon_waiting=lambda error: isinstance(error, Unreachable),
            finish=self._writer_connection.close,
            name="postgres-writer",
        )

    def watch_commits(self, callback: Callable[[int], None]) -> None:
        self._commit_watchers.append(callback)

    def watch_new_deliveries(self, callback: Callable[[], None]) -> None:
        self._delivery_watchers.append(callback)
        if self._database.is_open:
            self._listener.start()

    # Life cycle.

    async def migrate(self) -> tuple[int, int]:
        """Create or migrate the schema (under the schema lock: nodes may start together);
        the (from, to) versions. `open` does this first; `gateway migrate` does only this."""
        try:
            connection = await self._database.connect()
        except psycopg.Error as error:
            raise self._database.unavailable(error) from None
        try:
            async with connection:
                return await migrate(connection, where=self._database.where)
        except psycopg.Error as error:
            raise self._database.unavailable(error) from None

    async def open(self) -> None:
        if self._database.is_open:
            return
        await self.migrate()
        await self._database.open()
        self._writer = self._new_writer()
        self._writer.start()
        if self._delivery_watchers:
            self._listener.start()

    async def close(self) -> None:
        if not self._database.is_open:
            return
        await self._writer.close()
        await self._listener.stop()
        await self._database.close()

    async def ping(self) -> None:
        if self._writer.failure is not None:
            raise StoreUnavailable(self._writer.failure)
        if not self._writer.running:
            raise StoreUnavailable("the store's writer is not running")
        async with self._database.connection(timeout=PING_SECONDS) as db:
            await db.execute("SELECT 1")

    def _connection(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        return self._database.connection()

    def _transaction(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        return self._database.transaction()

    def _scrub(self, text: str) -> str:
        return self._database.scrub(text)

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()

    def _tell_commit_watchers(self, writes: int) -> None:
        for watcher in self._commit_watchers:
            try:
                watcher(writes)
            except Exception:
                log.exception("commit_watcher_failed")

    # The group commit: accepts and attempt records.

    async def _apply_batch(
        self, writes: Sequence[NewEvent | AttemptRecord]
    ) -> Sequence[AcceptOutcome | bool]:
        """One batch, on the writer thread's loop and connection."""
        events = [write for write in writes if isinstance(write, NewEvent)]
        records = [write for write in writes if isinstance(write, AttemptRecord)]
        async with self._writer_connection.session() as db:
            if events:
                outcomes, applied = await ingest.apply_batch(db, events, records, self._now())
            else:
                outcomes, applied = [], await self._record(db, records)
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
            outcomes, _ = await ingest.write_batch(db, events, [], self._now())
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
            return await ingest.quarantine(
                db,
                source=source,
                received_at=received_at,
                body=body,
                headers=encoded_headers,
                verification=verification,
                error=error,
            )

    async def quarantined(self) -> Sequence[QuarantinedPayload]:
        async with self._connection() as db:
            return await ingest.quarantined(db)

    async def release_quarantined(
        self, quarantine_id: int, events: Sequence[NewEvent]
    ) -> list[AcceptOutcome]:
        async with self._transaction() as db:
            return await ingest.release_quarantined(db, quarantine_id, events, now=self._now())

    async def note_quarantine_error(self, quarantine_id: int, error: str) -> None:
        async with self._connection() as db:
            await ingest.note_quarantine_error(db, quarantine_id, error)

    async def drop_quarantined(self, quarantine_id: int) -> bool:
        async with self._connection() as db:
            return await ingest.drop_quarantined(db, quarantine_id)

    # Delivery.

    async def claim_due(self, request: ClaimRequest) -> Claim:
        now = self._now()
        async with self._transaction() as db:
            return await queue.claim_due(db, now, request)

    async def release_leases(self, owner: str) -> None:
        async with self._transaction() as db:
            await queue.release_leases(db, owner)

    async def heartbeat(self, owner: str) -> None:
        async with self._connection() as db:
            await queue.heartbeat(db, owner, now=self._now())

    async def release_leases_of_silent_owners(self, silent_for: float) -> list[str]:
        async with self._transaction() as db:
            return await queue.release_leases_of_silent_owners(db, silent_for, now=self._now())

    async def record_attempt(
        self, attempt: Attempt, decision: Decision, *, lease_token: int
    ) -> bool:
        applied = await self._writer.submit(
            AttemptRecord(attempt, decision, lease_token), ingest=False
        )
        assert isinstance(applied, bool)
        return applied

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[bool]:
        if not records:
            return []
        # Not the group commit's, as `accept_many`: a batch of sends is already a batch of
        # records, and waiting for the group commit would only add its gap to the batch's.
        async with self._connection() as db:
            applied = await self._record(db, records)
        self._tell_commit_watchers(1)
        return applied

    async def record_attempts_then_claim(
        self, records: Sequence[AttemptRecord], request: ClaimRequest
    ) -> tuple[list[bool], Claim]:
        now = self._now()
        # One transaction, one commit: the records' leases given back are free for the claim
        # (its count of live leases comes after them), as is what they released.
        async with self._transaction() as db:
            first = await queue.record_unordered(db, records, keys_locked=False)
            applied, released = await queue.record_ordered(db, records, now, first)
            if released:
                await db.execute(NOTIFY)
            claimed = await queue.claim_due(db, now, request)
        self._tell_commit_watchers(1)
        return applied, claimed

    async def _record(self, db: Connection, records: Sequence[AttemptRecord]) -> list[bool]:
        """A batch of attempt records on an autocommit connection: the unordered alone are one
        statement, its own transaction; ordered ones make it a transaction of key locks first
        (queue.record_unordered settled nothing then)."""
        now = self._now()
        first = await queue.record_unordered(db, records, keys_locked=False)
        if not first.ordered:
            return first.applied
        async with db.transaction():
            applied, released = await queue.record_ordered(db, records, now, first)
            if released:
                await db.execute(NOTIFY)
        return applied

    async def next_due_at(self, *, subscribers: Sequence[str]) -> float | None:
        async with self._connection() as db:
            return await queue.next_due_at(db, subscribers)

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
        async with self._transaction() as db:
            return await queue.redrive(
                db,
                now=now,
                subscriber=subscriber,
                since=since,
                until=until,
                traceparent=traceparent,
                tracestate=tracestate,
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
        async with self._transaction() as db:
            return await queue.replay(
                db,
                event_id,
                subscribers,
                now=now,
                ordered=ordered,
                traceparent=traceparent,
                tracestate=tracestate,
            )

    async def event_subscribers(self, event_id: str) -> Sequence[str]:
        async with self._connection() as db:
            return await reads.event_subscribers(db, event_id)

    async def delivery_backlog(self) -> dict[str, Backlog]:
        async with self._connection() as db:
            return await reads.delivery_backlog(db)

    async def subscriber_circuits(self) -> dict[str, tuple[int, bytes]]:
        async with self._connection() as db:
            return await subscribers.subscriber_circuits(db)

    async def save_subscriber_circuit(
        self, subscriber: str, state: bytes, *, expected_version: int | None
    ) -> bool:
        now = self._now()
        async with self._connection() as db:
            return await subscribers.save_subscriber_circuit(
                db, subscriber, state, expected_version=expected_version, now=now
            )

    async def purge_expired(self, *, before: float, after: float, limit: int) -> Purged:
        async with self._transaction() as db:
            return await retention.purge_expired(db, before=before, after=after, limit=limit)

    # Operators: short reads on pooled connections, never in the writer's way.

    async def search_events(
        self, filters: EventFilter, *, after: tuple[float, str] | None, limit: int
    ) -> Sequence[EventRow]:
        async with self._connection() as db:
            return await reads.search_events(db, filters, after=after, limit=limit)

    async def event_record(self, event_id: str) -> EventRecord | None:
        async with self._connection() as db:
            return await reads.event_record(db, event_id)

    async def dead_letter_page(
        self, *, subscriber: str | None, after: tuple[float, int] | None, limit: int
    ) -> Sequence[DeadLetter]:
        async with self._connection() as db:
            return await reads.dead_letter_page(db, subscriber=subscriber, after=after, limit=limit)

    async def dead_counts(self) -> dict[str, int]:
        async with self._connection() as db:
            return await reads.dead_counts(db)

    async def paused_subscribers(self) -> set[str]:
        async with self._connection() as db:
            return await subscribers.paused_subscribers(db)

    async def set_paused(self, subscriber: str, paused: bool) -> None:
        async with self._connection() as db:
            await subscribers.set_paused(db, subscriber, paused, now=self._now())

    async def stats(self) -> dict[str, int]:
        async with self._connection() as db:
            return await reads.stats(db)

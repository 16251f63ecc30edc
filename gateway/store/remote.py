"""`RemoteStore`: the store of a process that does not own the SQLite file, whose every call
goes to the writer process (gateway/store/writer_process.py) over its Unix socket.

Why a process of its own owns the database: the writer thread of an in-process SQLite store
competes for the GIL with the event loop that parses the webhooks, and several serving
processes each holding the file's write lock in turn commit in small groups. One writer
process gathers every process's writes into one group commit (one fsync), and the serving
processes spend their CPU on HTTP. The answer to `accept` comes back after the commit, so a
200 still means the event is on disk.

One connection per process, pipelined (gateway/store/wire.py). When the writer goes away
(killed, restarting), every call waiting on it fails at once with StoreUnavailable (ingress
answers 503: the provider retries) and the next call connects again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, cast

import msgspec
import structlog

from gateway.delivery.decide import Decision
from gateway.store.base import (
    AcceptOutcome,
    Attempt,
    Backlog,
    ClaimedDelivery,
    DeadLetter,
    EventFilter,
    EventRecord,
    EventRow,
    NewEvent,
    Purged,
    QuarantinedPayload,
    Store,
    StoreSchemaError,
    StoreUnavailable,
)
from gateway.store.sqlite import SCHEMA_VERSION
from gateway.store.wire import (
    ERROR_NONE,
    ERROR_SCHEMA,
    ERROR_UNAVAILABLE,
    METHODS,
    NEWS_DELIVERIES,
    WATCH,
    FrameReader,
    FrameTooLarge,
    InReply,
    Outbox,
    OutCall,
)

__all__ = ["RemoteStore", "RemoteStoreError"]

log = structlog.get_logger("gateway.store")

# A restarting writer is back within a second or two; `open` waits that long for it.
OPEN_WAIT_SECONDS: Final = 30.0
CONNECT_TIMEOUT_SECONDS: Final = 2.0
# After a failed connect, calls fail at once for this long instead of each trying again.
RECONNECT_PAUSE_SECONDS: Final = 0.1
# As long as the in-process writer waits before it calls itself stalled (gateway/store/sqlite.py).
CALL_TIMEOUT_SECONDS: Final = 30.0
# How often a connection fails the calls past their deadline.
SWEEP_SECONDS: Final = 1.0
_reply_decoder = msgspec.msgpack.Decoder(InReply)


class RemoteStoreError(StoreUnavailable):
    """The writer process failed a call for a reason of its own (a bug: its log says which).
    Unavailable to the caller, as a batch's bug is in the in-process store: ingress answers 503
    and the provider retries, the dispatcher tries again; neither stops."""


class _Connection(asyncio.Protocol):
    """One open connection: its outbox, the calls waiting for their replies, the replies
    parsed as they arrive (gateway/store/wire.py `FrameReader`)."""

    transport: asyncio.Transport
    outbox: Outbox

    def __init__(self, on_news: Callable[[], None]) -> None:
        # Each call's future and the time (monotonic) past which it fails unanswered.
        self.waiting: dict[int, tuple[asyncio.Future[InReply], float]] = {}
        self.closed = False
        self._sweep: asyncio.TimerHandle | None = None
        # Whether the writer was asked to tell this connection of new deliveries.
        self.watching = False
        self._on_news = on_news
        self._frames = FrameReader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not registered as asyncio.Transport's subclass).
        self.transport = cast("asyncio.Transport", transport)
        self.outbox = Outbox(self.transport)
        self._sweep = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._fail_overdue)

    def _fail_overdue(self) -> None:
        # One timer per connection, not one per call: a call's deadline is checked here.
        now = time.monotonic()
        overdue = StoreUnavailable(
            f"the store's writer process did not answer within {CALL_TIMEOUT_SECONDS:.0f} s"
        )
        for call_id, (future, deadline) in list(self.waiting.items()):
            if deadline <= now:
                del self.waiting[call_id]
                if not future.done():
                    future.set_exception(overdue)
        if not self.closed:
            self._sweep = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._fail_overdue)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close("the store's writer process closed the connection")

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._frames.feed(data):
                self._received(_reply_decoder.decode(payload))
        except FrameTooLarge as error:
            self.close(f"the store's writer process sent a frame of {error.size} bytes")
        except msgspec.DecodeError as error:
            self.close(f"the store's writer process sent an unreadable reply: {error}")

    def _received(self, reply: InReply) -> None:
        if reply.id == 0:
            if reply.detail == NEWS_DELIVERIES:
                self._on_news()
            return
        waiting = self.waiting.pop(reply.id, None)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(reply)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport.close()
        if self._sweep is not None:
            self._sweep.cancel()
        failed = StoreUnavailable(reason)
        for future, _ in self.waiting.values():
            if not future.done():
                future.set_exception(failed)
        self.waiting.clear()


class RemoteStore(Store):
    schema_version: ClassVar[int] = SCHEMA_VERSION

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._failed_at = 0.0
        self._failure = ""
        self._next_id = 0
        self._delivery_watchers: list[Callable[[], None]] = []
        # Until `open`, as after `close`, every call is unavailable (as every store's is).
        self._closed = True
        self._closed_reason = "the store is not open"

    def watch_commits(self, callback: Callable[[int], None]) -> None:
        # The writer process counts its own commits (every process shares /metrics' files):
        # counting them here too would count each once per process.
        return

    def watch_new_deliveries(self, callback: Callable[[], None]) -> None:
        self._delivery_watchers.append(callback)

    async def open(self) -> None:
        self._closed = False
        deadline = time.monotonic() + OPEN_WAIT_SECONDS
        while True:
            try:
                await self._connected()
                return
            except StoreUnavailable:
                if time.monotonic() >= deadline:
                    self._closed = True
                    raise
                await asyncio.sleep(RECONNECT_PAUSE_SECONDS)

    async def close(self) -> None:
        self._closed = True
        self._closed_reason = "the store is closed"
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close("the store is closed")

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if self._closed:
            raise StoreUnavailable(self._closed_reason)
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            connection = self._connection
            if connection is not None and not connection.closed:
                return connection
            if time.monotonic() - self._failed_at < RECONNECT_PAUSE_SECONDS:
                raise StoreUnavailable(self._failure)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    _, connection = await asyncio.get_running_loop().create_unix_connection(
                        lambda: _Connection(self._tell_delivery_watchers), str(self.socket_path)
                    )
            except (OSError, TimeoutError) as error:
                self._failed_at = time.monotonic()
                self._failure = (
                    "the store's writer process is not reachable:"
                    f" {getattr(error, 'strerror', None) or type(error).__name__}"
                )
                raise StoreUnavailable(self._failure) from None
            self._connection = connection
            if self._delivery_watchers:
                # Deliveries committed while there was no connection: look now.
                self._tell_delivery_watchers()
            return connection

    def _tell_delivery_watchers(self) -> None:
        for watcher in self._delivery_watchers:
            watcher()

    async def _send(self, connection: _Connection, method: str, args: tuple[Any, ...]) -> InReply:
        self._next_id += 1
        call_id = self._next_id
        future: asyncio.Future[InReply] = asyncio.get_running_loop().create_future()
        connection.waiting[call_id] = (future, time.monotonic() + CALL_TIMEOUT_SECONDS)
        connection.outbox.send(OutCall(call_id, method, args))
        try:
            return await future
        finally:
            connection.waiting.pop(call_id, None)

    async def _call(self, method: str, *args: Any) -> Any:
        connection = await self._connected()
        if self._delivery_watchers and not connection.watching:
            connection.watching = True
            await self._send(connection, WATCH, ())
        reply = await self._send(connection, method, args)
        if reply.error == ERROR_NONE:
            return METHODS[method].result.decode(reply.result)
        if reply.error == ERROR_UNAVAILABLE:
            raise StoreUnavailable(reply.detail)
        if reply.error == ERROR_SCHEMA:
            raise StoreSchemaError(reply.detail)
        raise RemoteStoreError(reply.detail)

    # Every method of the interface, as a call to the writer process.

    async def ping(self) -> None:
        await self._call("ping")

    async def accept(self, event: NewEvent) -> AcceptOutcome:
        outcome: AcceptOutcome = await self._call("accept", event)
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
        quarantine_id: int = await self._call(
            "quarantine", source, received_at, body, headers, verification, error
        )
        return quarantine_id

    async def quarantined(self) -> Sequence[QuarantinedPayload]:
        payloads: list[QuarantinedPayload] = await self._call("quarantined")
        return payloads

    async def release_quarantined(self, quarantine_id: int, event: NewEvent) -> AcceptOutcome:
        outcome: AcceptOutcome = await self._call("release_quarantined", quarantine_id, event)
        return outcome

    async def note_quarantine_error(self, quarantine_id: int, error: str) -> None:
        await self._call("note_quarantine_error", quarantine_id, error)

    async def drop_quarantined(self, quarantine_id: int) -> bool:
        dropped: bool = await self._call("drop_quarantined", quarantine_id)
        return dropped

    async def claim_due(
        self, *, subscriber: str, limit: int, lease_seconds: float, owner: str
    ) -> Sequence[ClaimedDelivery]:
        claimed: list[ClaimedDelivery] = await self._call(
            "claim_due", subscriber, limit, lease_seconds, owner
        )
        return claimed

    async def release_leases(self, owner: str) -> None:
        await self._call("release_leases", owner)

    async def heartbeat(self, owner: str) -> None:
        await self._call("heartbeat", owner)

    async def release_leases_of_silent_owners(self, silent_for: float) -> list[str]:
        owners: list[str] = await self._call("release_leases_of_silent_owners", silent_for)
        return owners

    async def record_attempt(
        self, attempt: Attempt, decision: Decision, *, lease_token: int
    ) -> bool:
        applied: bool = await self._call("record_attempt", attempt, decision, lease_token)
        return applied

    async def next_due_at(self, *, subscribers: Sequence[str]) -> float | None:
        due: float | None = await self._call("next_due_at", subscribers)
        return due

    async def redrive(
        self,
        *,
        now: float,
        subscriber: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        count: int = await self._call("redrive", now, subscriber, since, until)
        return count

    async def replay(
        self,
        event_id: str,
        subscribers: Sequence[str],
        *,
        now: float,
        ordered: Collection[str] = (),
    ) -> int | None:
        count: int | None = await self._call("replay", event_id, subscribers, now, list(ordered))
        return count

    async def event_subscribers(self, event_id: str) -> Sequence[str]:
        subscribers: list[str] = await self._call("event_subscribers", event_id)
        return subscribers

    async def delivery_backlog(self) -> dict[str, Backlog]:
        backlog: dict[str, Backlog] = await self._call("delivery_backlog")
        return backlog

    async def subscriber_circuits(self) -> dict[str, tuple[int, bytes]]:
        circuits: dict[str, tuple[int, bytes]] = await self._call("subscriber_circuits")
        return circuits

    async def save_subscriber_circuit(
        self, subscriber: str, state: bytes, *, expected_version: int | None
    ) -> bool:
        saved: bool = await self._call(
            "save_subscriber_circuit", subscriber, state, expected_version
        )
        return saved

    async def purge_expired(self, *, before: float, after: float, limit: int) -> Purged:
        purged: Purged = await self._call("purge_expired", before, after, limit)
        return purged

    async def search_events(
        self, filters: EventFilter, *, after: tuple[float, str] | None, limit: int
    ) -> Sequence[EventRow]:
        rows: list[EventRow] = await self._call("search_events", filters, after, limit)
        return rows

    async def event_record(self, event_id: str) -> EventRecord | None:
        record: EventRecord | None = await self._call("event_record", event_id)
        return record

    async def dead_letter_page(
        self, *, subscriber: str | None, after: tuple[float, int] | None, limit: int
    ) -> Sequence[DeadLetter]:
        page: list[DeadLetter] = await self._call("dead_letter_page", subscriber, after, limit)
        return page

    async def dead_counts(self) -> dict[str, int]:
        counts: dict[str, int] = await self._call("dead_counts")
        return counts

    async def paused_subscribers(self) -> set[str]:
        paused: set[str] = await self._call("paused_subscribers")
        return paused

    async def set_paused(self, subscriber: str, paused: bool) -> None:
        await self._call("set_paused", subscriber, paused)

    async def stats(self) -> dict[str, int]:
        counts: dict[str, int] = await self._call("stats")
        return counts

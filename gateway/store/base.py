"""The store: one interface, several backends (SQLite for one host, PostgreSQL for several).

It holds canonical events, one delivery per (event, subscriber), every delivery attempt, and
quarantined payloads. Two rules make the gateway lose nothing:
- `accept` writes an event and all its deliveries in one transaction (`accept_many`: the events
  of one request, all in one), durably, before the provider is told 200; the event id is
  unique, so a provider's retry can never store it twice, even when both copies arrive at the
  same moment on different processes;
- deliveries are *claimed* with a lease (`claim_due`): a worker that crashes mid-send loses its
  lease, and the delivery becomes due again for any other worker. Each claim hands out a new
  lease token, and an attempt is recorded only under the token that still holds the lease
  (fencing): a worker whose lease was taken over cannot overwrite what its successor recorded.
  The live leases of a subscriber are its sends under way, whoever holds them, so the claim
  counts them and never leases past the subscriber's `max_in_flight`: the bound holds for the
  whole gateway, every process and node together, not for each one.

Ordered subscribers (docs/reference/ordering.md) are the store's too, so the rule holds across
processes: a delivery to an ordered subscriber whose source and subject (its ordering key) has an
earlier delivery still pending for that subscriber is stored `held`, and claims never see it. The
transaction that records its predecessor delivered or dead makes the next one of the key pending,
due at once (the rule, and the parts both backends share: gateway/store/ordering.py).

Times are unix seconds (float) throughout: every backend stores and compares them as numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from typing import ClassVar, Literal

import msgspec

from gateway.store.decisions import Decision

__all__ = [
    "AcceptOutcome",
    "Attempt",
    "AttemptRecord",
    "Backlog",
    "Claim",
    "ClaimRequest",
    "ClaimedDelivery",
    "DeadLetter",
    "DeliveryRecord",
    "DeliveryState",
    "EventFilter",
    "EventRecord",
    "EventRow",
    "NewEvent",
    "Purged",
    "QuarantinedPayload",
    "Store",
    "StoreSchemaError",
    "StoreUnavailable",
    "released_as",
]

# `held`: pending, but behind an earlier delivery of its ordering key (not claimable yet).
DeliveryState = Literal["pending", "held", "delivered", "dead"]
AcceptOutcome = Literal["accepted", "duplicate"]


def released_as(events: Sequence[NewEvent]) -> str:
    """What a released quarantined payload's `released_as` column says: the id of the event it
    became (the first, for a batch provider's several); "" for a batch of none, released all the
    same (NULL is what says a payload still waits)."""
    return events[0].id if events else ""


class StoreUnavailable(Exception):
    """The store cannot take the write now (disk full, database down, queue full): answer 503,
    and the provider retries."""


class StoreSchemaError(Exception):
    """The store's schema is one this gateway cannot use (newer than it knows): a node must
    refuse to start, with this message, rather than wait for a database that will not change."""


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to accept: its encoded bytes (encoded once, stored and sent as they are) and the
    subscribers its routes selected; `ordered` are those of them with `ordering = "subject"`,
    which get the events of one source and `subject` one at a time (an event without a subject
    is never held)."""

    id: str
    source: str
    type: str
    received_at: float
    body: bytes
    subscribers: tuple[str, ...]
    subject: str | None = None
    ordered: tuple[str, ...] = ()
    # The event's `data.status`, kept in a column of its own: operators filter on it.
    status: str | None = None


class ClaimedDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A due delivery, leased to one worker: `lease_token` is that lease, and recording the
    attempt needs it; `due_at` is when the delivery became due (its next_attempt_at)."""

    delivery_id: int
    event_id: str
    subscriber: str
    attempts: int
    created_at: float
    due_at: float
    lease_token: int
    body: bytes
    # The event's source name and canonical type: queue subscribers' `{source}` / `{type}`
    # templates (docs/reference/queues.md).
    source: str = ""
    event_type: str = ""
    # The trace a replay or redrive started for it (docs/reference/traces.md), whose attempts belong
    # to it; None: they continue the event's own trace (its body's `traceparent`).
    traceparent: str | None = None
    tracestate: str | None = None


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """What one `claim_due` leased, and whether the subscriber is `full` now: `max_in_flight`
    of its leases live, across every process and node, so that no claim for it gets anything
    until one of those sends ends (or its lease runs out)."""

    deliveries: tuple[ClaimedDelivery, ...]
    full: bool


class ClaimRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A claim to make (`claim_due`, or `record_attempts_then_claim` after its records): whose
    deliveries, how many at most, the subscriber's bound on live leases, and the lease's
    holder and length."""

    subscriber: str
    limit: int
    max_in_flight: int
    lease_seconds: float
    owner: str


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try at sending a delivery, as recorded for operators."""

    delivery_id: int
    started_at: float
    duration: float
    outcome: Literal["delivered", "retry", "failed"]
    status_code: int | None = None
    error: str | None = None
    response_excerpt: str | None = None


class AttemptRecord(msgspec.Struct, frozen=True):
    """An attempt to record, the decision taken on it, and the lease it was made under."""

    attempt: Attempt
    decision: Decision
    lease_token: int


class Backlog(msgspec.Struct, frozen=True, kw_only=True):
    """One subscriber's undelivered deliveries: how many (`held` ones included), how many of
    them are held behind an earlier one of their subject, and when the oldest was created."""

    count: int
    held: int
    oldest_created_at: float


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: int
    event_id: str
    subscriber: str
    attempts: int
    last_error: str | None
    dead_at: float


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What an operator's event search keeps (None: any): `type_glob` is a glob over the
    canonical type, `status` the event's `data.status`, `since` (inclusive) and `until`
    (exclusive) bound `received_at`."""

    source: str | None = None
    type_glob: str | None = None
    subject: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a search, with the state of each of its deliveries by subscriber."""

    id: str
    source: str
    type: str
    subject: str | None
    received_at: float
    body: bytes
    deliveries: dict[str, DeliveryState]


class DeliveryRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery of an event, its attempts oldest first."""

    subscriber: str
    state: DeliveryState
    next_attempt_at: float
    attempts: tuple[Attempt, ...]


class EventRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One stored event as sent (its canonical bytes) and its deliveries."""

    id: str
    received_at: float
    body: bytes
    deliveries: tuple[DeliveryRecord, ...]


class QuarantinedPayload(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated body the adapter could not read, kept raw for `gateway reprocess`."""

    id: int
    source: str
    received_at: float
    body: bytes
    headers: dict[str, str]
    verification: str
    error: str


class Purged(msgspec.Struct, frozen=True, kw_only=True):
    """What one retention batch (`Store.purge_expired`) deleted, and where the next one starts:
    `scanned_to` is the `received_at` of the last event it looked at, None when no event older
    than the cutoff is left to look at."""

    events: int
    quarantined: int
    scanned_to: float | None


class Store(ABC):
    """What the gateway needs from durable storage. Every method may raise StoreUnavailable."""

    # The schema version `open()` leaves the store at (it migrates an older one and refuses a
    # newer one with StoreSchemaError): `gateway migrate` prints it. Each backend sets its own.
    schema_version: ClassVar[int]

    @abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release connections."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers (for /readyz)."""

    # Ingress.

    @abstractmethod
    async def accept(self, event: NewEvent) -> AcceptOutcome:
        """Store the event and one pending delivery per subscriber, durably, in one transaction;
        `duplicate` (and nothing written) when an event with that id exists."""

    @abstractmethod
    async def accept_many(self, events: Sequence[NewEvent]) -> list[AcceptOutcome]:
        """`accept` for the events of one request (a provider that posts a batch,
        docs/reference/providers.md `each`): all of them and their deliveries in one transaction,
        durably, each with its own id and dedup; an outcome per event, in order (a later copy of an
        id in `events` is a duplicate of the first)."""

    @abstractmethod
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
        """Keep an unreadable but authenticated body, durably; its quarantine id."""

    @abstractmethod
    async def quarantined(self) -> Sequence[QuarantinedPayload]:
        """Payloads waiting in quarantine, oldest first."""

    @abstractmethod
    async def release_quarantined(
        self, quarantine_id: int, events: Sequence[NewEvent]
    ) -> list[AcceptOutcome]:
        """Accept `events` (normalized from a quarantined payload: one, or a batch provider's
        several) and take the payload out of quarantine, in one transaction; an outcome per
        event, as `accept_many`."""

    @abstractmethod
    async def note_quarantine_error(self, quarantine_id: int, error: str) -> None:
        """Record why a reprocessing attempt failed again."""

    @abstractmethod
    async def drop_quarantined(self, quarantine_id: int) -> bool:
        """Delete a payload waiting in quarantine (an operator gave up on it); False when no
        payload with that id is waiting."""

    # Delivery.

    @abstractmethod
    async def claim_due(self, request: ClaimRequest) -> Claim:
        """Lease up to `request.limit` pending deliveries to `request.subscriber` that are due
        and whose lease (if any) expired, oldest due first, each under a new lease token held by
        `request.owner` for `request.lease_seconds`; but never more than `request.max_in_flight`
        less the subscriber's live leases (pending deliveries whose lease has not run out),
        whoever holds them. Counting and leasing are one step: two claims, from any processes or
        nodes, never both take the last free slot. "Due", "expired" and "live" are judged by the
        store's clock, the one clock every worker shares."""

    @abstractmethod
    async def release_leases(self, owner: str) -> None:
        """A clean stop of `owner`: give back every lease it holds, so others need not wait,
        and forget its heartbeat."""

    @abstractmethod
    async def heartbeat(self, owner: str) -> None:
        """`owner` (one dispatcher) is alive, as of the store's clock."""

    @abstractmethod
    async def release_leases_of_silent_owners(self, silent_for: float) -> list[str]:
        """Give back the leases of every owner whose last heartbeat is more than `silent_for`
        seconds old (by the store's clock), and forget those owners; who they were. Evidence
        that holds across hosts and PID namespaces, unlike a pid."""

    @abstractmethod
    async def record_attempt(
        self, attempt: Attempt, decision: Decision, *, lease_token: int
    ) -> bool:
        """Record an attempt and the decision taken on it (delivered, retry at a time, dead),
        and release the lease: only if `lease_token` still holds the delivery's lease and the
        delivery is still pending. Otherwise change nothing and return False (a stale worker).
        A delivered or dead one releases the next held delivery of its ordering key, due now,
        in the same transaction."""

    @abstractmethod
    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[bool]:
        """`record_attempt` for each of `records` (the answers of one batch of sends), written
        together; for each, in order, whether it applied. Each is fenced by its own lease
        token: a stale one changes nothing and takes nothing from the others."""

    async def record_attempts_then_claim(
        self, records: Sequence[AttemptRecord], request: ClaimRequest
    ) -> tuple[list[bool], Claim]:
        """`record_attempts`, then `claim_due(request)`: a worker whose batch of sends is over
        takes the next batch with the same write where the store can (the leases the records
        gave back are free for the claim, and the next of an ordering key a record released is
        claimable). Here two writes; a backend overrides it with one."""
        applied = await self.record_attempts(records)
        return applied, await self.claim_due(request)

    @abstractmethod
    async def next_due_at(self, *, subscribers: Sequence[str]) -> float | None:
        """When the earliest pending delivery to one of `subscribers` is due, counting its lease
        (None when nothing is pending)."""

    @abstractmethod
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
        """Make dead deliveries pending again, due now, with a fresh schedule; how many.
        `since` and `until` bound when they died. One whose ordering key has a delivery pending
        (or held) is held, and keeps its place in commit order: it goes before the held ones
        committed after it. `traceparent` and `tracestate`: the trace the redrive started,
        which their attempts belong to (None: their events' own)."""

    @abstractmethod
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
        """Send a stored event again to `subscribers` (due now, a fresh schedule), whether or not
        a route selected them; None when there is no such event. For those in `ordered`, as
        `redrive`: held while its ordering key has a delivery pending; a delivery the event
        never had is a new one, behind every delivery of its subject stored before.
        `traceparent` and `tracestate`: the trace the replay started, which their attempts
        belong to (None: the event's own)."""

    @abstractmethod
    async def event_subscribers(self, event_id: str) -> Sequence[str]:
        """The subscribers an event has deliveries for."""

    @abstractmethod
    async def delivery_backlog(self) -> dict[str, Backlog]:
        """Per subscriber with pending (or held) deliveries: how many, how many held, and when
        the oldest was created."""

    @abstractmethod
    async def subscriber_circuits(self) -> dict[str, tuple[int, bytes]]:
        """Each stored subscriber circuit: its version and the bytes gateway/delivery/circuit.py
        encoded. A subscriber with no row is at version 0 (closed)."""

    @abstractmethod
    async def save_subscriber_circuit(
        self, subscriber: str, state: bytes, *, expected_version: int | None
    ) -> bool:
        """Keep a subscriber's circuit state (shared by every gateway process) if its version is
        still `expected_version` (compare-and-set; 0: no row yet), bumping the version; False
        when another process changed it first. `None` sets it whatever it is (an operator's
        `gateway enable`)."""

    @abstractmethod
    def watch_commits(self, callback: Callable[[int], None]) -> None:
        """Call `callback(writes)` after every commit of the group commit, from whatever
        thread committed: the writes per commit are its batch size (/metrics sums them over
        every gateway process). SQLite's writer carries every write; PostgreSQL's carries
        accepts and attempt records, and its other writes (claims, heartbeats, operators'
        commands) commit on pooled connections of their own, unreported."""

    @abstractmethod
    def watch_new_deliveries(self, callback: Callable[[], None]) -> None:
        """Call `callback()` on this process's event loop when deliveries may have become due
        through another process's commit (another node's ingest, a CLI redrive): the
        dispatcher's wake-up. A store that cannot hear of them never calls it; the
        dispatcher's poll finds them then."""

    @abstractmethod
    async def purge_expired(self, *, before: float, after: float, limit: int) -> Purged:
        """Retention, one short transaction: of the (at most `limit`) oldest events received
        after `after` and before `before`, delete those whose every delivery was delivered
        (or that have none), with their deliveries and attempts; an event with a pending or
        dead delivery stays until it is delivered, redriven or dropped. Also delete up to
        `limit` quarantined payloads: released ones (their event is stored), and waiting ones
        received before `before`."""

    # Operators (gateway/operations/): pages walk a keyset, never an OFFSET, so a page deep in
    # millions of events costs what the first one does and none repeats or skips an item.

    @abstractmethod
    async def search_events(
        self, filters: EventFilter, *, after: tuple[float, str] | None, limit: int
    ) -> Sequence[EventRow]:
        """Up to `limit` events matching `filters`, newest first (received_at, then id), those
        strictly after the (received_at, id) `after` in that order."""

    @abstractmethod
    async def event_record(self, event_id: str) -> EventRecord | None:
        """One event with its deliveries and their attempts; None when there is no such event."""

    @abstractmethod
    async def dead_letter_page(
        self, *, subscriber: str | None, after: tuple[float, int] | None, limit: int
    ) -> Sequence[DeadLetter]:
        """Up to `limit` dead deliveries, newest first (dead_at, then delivery id), those
        strictly after the (dead_at, delivery id) `after` in that order."""

    @abstractmethod
    async def dead_counts(self) -> dict[str, int]:
        """Dead deliveries per subscriber (those with none are absent)."""

    @abstractmethod
    async def paused_subscribers(self) -> set[str]:
        """The subscribers an operator paused: every dispatcher claims nothing for them."""

    @abstractmethod
    async def set_paused(self, subscriber: str, paused: bool) -> None:
        """Pause a subscriber (its deliveries stay pending, no attempt spent) or resume it."""

    @abstractmethod
    async def stats(self) -> dict[str, int]:
        """Counts for health and metrics: events, pending, held, delivered, dead, quarantined."""

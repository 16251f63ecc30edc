"""The store: one interface, several backends (SQLite now, PostgreSQL next).

It holds canonical events, one delivery per (event, subscriber), every delivery attempt, and
quarantined payloads. Two rules make the gateway lose nothing:
- `accept` writes an event and all its deliveries in one transaction, durably, before the
  provider is told 200; the event id is unique, so a provider's retry can never store it twice,
  even when both copies arrive at the same moment on different processes;
- deliveries are *claimed* with a lease (`claim_due`): a worker that crashes mid-send loses its
  lease, and the delivery becomes due again for any other worker.

Times are unix seconds (float) throughout: every backend stores and compares them as numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

__all__ = [
    "AcceptOutcome",
    "Attempt",
    "ClaimedDelivery",
    "DeadLetter",
    "DeliveryState",
    "NewEvent",
    "QuarantinedPayload",
    "Store",
    "StoreUnavailable",
]

DeliveryState = Literal["pending", "delivered", "dead"]
AcceptOutcome = Literal["accepted", "duplicate"]


class StoreUnavailable(Exception):
    """The store cannot take the write now (disk full, database down, queue full): answer 503,
    and the provider retries."""


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to accept: its encoded bytes (encoded once, stored and sent as they are) and the
    subscribers its routes selected."""

    id: str
    source: str
    type: str
    received_at: float
    body: bytes
    subscribers: tuple[str, ...]


class ClaimedDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A due delivery, leased to one worker until `lease_until`."""

    delivery_id: int
    event_id: str
    subscriber: str
    attempts: int
    created_at: float
    body: bytes


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One try at sending a delivery, as recorded for operators."""

    delivery_id: int
    started_at: float
    duration: float
    outcome: Literal["delivered", "retry", "failed"]
    status_code: int | None = None
    error: str | None = None
    response_excerpt: str | None = None


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: int
    event_id: str
    subscriber: str
    attempts: int
    last_error: str | None
    dead_at: float


class QuarantinedPayload(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated body the adapter could not read, kept raw for `gateway reprocess`."""

    id: int
    source: str
    received_at: float
    body: bytes
    headers: dict[str, str]
    verification: str
    error: str


class Store(ABC):
    """What the gateway needs from durable storage. Every method may raise StoreUnavailable."""

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
    async def release_quarantined(self, quarantine_id: int, event: NewEvent) -> AcceptOutcome:
        """Accept `event` (normalized from a quarantined payload) and take the payload out of
        quarantine, in one transaction."""

    @abstractmethod
    async def note_quarantine_error(self, quarantine_id: int, error: str) -> None:
        """Record why a reprocessing attempt failed again."""

    # Delivery.

    @abstractmethod
    async def claim_due(
        self,
        *,
        subscriber: str,
        now: float,
        limit: int,
        lease_seconds: float,
        owner: str,
    ) -> Sequence[ClaimedDelivery]:
        """Lease up to `limit` pending deliveries to `subscriber`, due at `now`, whose lease
        (if any) expired, oldest due first."""

    @abstractmethod
    async def release_leases(self, owner: str) -> None:
        """Give back every lease `owner` holds (a clean shutdown), so others need not wait."""

    @abstractmethod
    async def lease_owners(self) -> Sequence[str]:
        """Who holds leases on pending deliveries now (to find the ones a crash left behind)."""

    @abstractmethod
    async def record_attempt(
        self,
        attempt: Attempt,
        *,
        next_attempt_at: float | None = None,
        dead: bool = False,
    ) -> None:
        """Record an attempt and its consequence: delivered, retry at `next_attempt_at`, or
        dead (a dead letter). Releases the lease."""

    @abstractmethod
    async def next_due_at(self, *, subscribers: Sequence[str]) -> float | None:
        """When the earliest pending delivery to one of `subscribers` is due, counting its lease
        (None when nothing is pending)."""

    @abstractmethod
    async def dead_letters(self, *, subscriber: str | None = None) -> Sequence[DeadLetter]:
        """Dead deliveries, oldest first."""

    @abstractmethod
    async def redrive(
        self,
        *,
        now: float,
        subscriber: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """Make dead deliveries pending again, due now, with a fresh schedule; how many.
        `since` and `until` bound when they died."""

    @abstractmethod
    async def replay(self, event_id: str, subscribers: Sequence[str], *, now: float) -> int | None:
        """Send a stored event again to `subscribers` (due now, a fresh schedule), whether or not
        a route selected them; None when there is no such event."""

    @abstractmethod
    async def event_subscribers(self, event_id: str) -> Sequence[str]:
        """The subscribers an event has deliveries for."""

    @abstractmethod
    async def delivery_backlog(self) -> dict[str, tuple[int, float]]:
        """Per subscriber with pending deliveries: how many, and when the oldest was created."""

    @abstractmethod
    async def subscriber_circuits(self) -> dict[str, bytes]:
        """Each subscriber's circuit-breaker state, as the dispatcher encoded it."""

    @abstractmethod
    async def save_subscriber_circuit(self, subscriber: str, state: bytes) -> None:
        """Keep a subscriber's circuit-breaker state (shared by every gateway process)."""

    @abstractmethod
    def watch_commits(self, callback: Callable[[int], None]) -> None:
        """Call `callback(writes)` after every commit, from whatever thread committed: the
        writes per commit are the group commit's batch size (/metrics sums them over every
        gateway process)."""

    @abstractmethod
    async def stats(self) -> dict[str, int]:
        """Counts for health and metrics: events, pending, delivered, dead, quarantined."""

"""Ordered delivery per subject (docs/reference/ordering.md): the rule, once, and the parts of it
both backends share.

A subscriber with `ordering = "subject"` gets the events of one source and subject one at a
time, in commit order. The store keeps the rule, so that it holds across every process and node:

- Every delivery to an ordered subscriber carries its ordering key (`ordering_key`); others
  have none and are never held.
- A delivery whose (subscriber, key) already has a delivery pending or held (the key is *busy*)
  is stored `held`; claims only ever see `pending` ones. Within one transaction, commit order is
  the order of the writes: of two deliveries of one key, the first goes out and the second is
  held behind it (`place`).
- The transaction that records a key's pending delivery delivered or dead releases the next
  held one of that key (the lowest id: commit order), pending and due at once, unless one of
  the key is pending already (`released_keys` says which keys). A retry keeps its key busy.
- A redrive or replay places the delivery as a new one would: held behind whatever of its key
  is pending or held (so a redriven one keeps its place behind earlier commits of its key); a
  replayed delivery still pending or held keeps its state and its place.

How each backend keeps "is the key busy?" true between the read and the write is its own:
SQLite's single writer (`gateway/store/sqlite/ordering.py`) takes writes one transaction at a
time; PostgreSQL locks each key first (`gateway/store/postgres/ordering.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.store.base import DeliveryState, NewEvent
from gateway.store.decisions import Decision, RetryAt

__all__ = ["Key", "ordering_key", "ordering_pairs", "place", "released_keys", "wanted_keys"]

# (subscriber, ordering key): what ordering goes by, per subscriber.
Key = tuple[str, str]


def ordering_key(source: str, subject: str | None) -> str | None:
    """The key ordered delivery goes by: one source's events about one subject; None (never
    held) without a subject. A source name has no `/` (the config's rule for names), so the
    first one separates the two, and the key reads plainly in a database's own client. Every
    backend stores this same key."""
    return None if subject is None else f"{source}/{subject}"


def ordering_pairs(event: NewEvent) -> list[Key]:
    """(subscriber, ordering key) of each of the event's ordered deliveries."""
    key = ordering_key(event.source, event.subject)
    if key is None:
        return []
    return [(subscriber, key) for subscriber in event.subscribers if subscriber in event.ordered]


def wanted_keys(events: Iterable[NewEvent]) -> list[Key]:
    """Every (subscriber, ordering key) of `events`' ordered deliveries, once each, in order."""
    return list(dict.fromkeys(pair for event in events for pair in ordering_pairs(event)))


def place(subscriber: str, key: str | None, busy: set[Key]) -> DeliveryState:
    """The state a delivery (re)enters the queue in: held when its key is busy (`busy`: the
    keys with a delivery pending or held, stored or written earlier in this transaction),
    pending otherwise; its key is busy from then on."""
    if key is None:
        return "pending"
    state: DeliveryState = "held" if (subscriber, key) in busy else "pending"
    busy.add((subscriber, key))
    return state


def released_keys(settled: Iterable[tuple[int, Decision]], keys: Mapping[int, Key]) -> list[Key]:
    """The keys whose next held delivery an attempt record releases: those of the (delivery
    id, decision) pairs that left their delivery delivered or dead (`keys`: the ordered
    deliveries' keys by id), once each."""
    return list(
        dict.fromkeys(
            keys[delivery_id]
            for delivery_id, decision in settled
            if not isinstance(decision, RetryAt) and delivery_id in keys
        )
    )

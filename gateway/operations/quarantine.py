"""`gateway quarantine`: what waits in quarantine, and dropping a payload an operator gave up on.

Items have the admin API's shape (docs/reference/admin.md): `{"id", "source", "received_at",
"verification", "error"}`, times in RFC 3339 UTC.
"""

from __future__ import annotations

import msgspec

from gateway.config import GatewayConfig
from gateway.operations.paging import check_limit, decode_cursor, encode_cursor
from gateway.reprocess import reprocess_quarantine
from gateway.store.base import QuarantinedPayload, Store
from gateway.times import rfc3339

__all__ = [
    "QuarantineItem",
    "QuarantinePage",
    "ReprocessResult",
    "drop_quarantined",
    "list_quarantine",
    "quarantine_page",
    "quarantined_payload",
    "reprocess",
]


class QuarantineItem(msgspec.Struct, frozen=True, kw_only=True):
    """One payload waiting in quarantine (its body and headers stay in the store)."""

    id: int
    source: str
    received_at: str
    verification: str
    error: str


def _item(payload: QuarantinedPayload) -> QuarantineItem:
    return QuarantineItem(
        id=payload.id,
        source=payload.source,
        received_at=rfc3339(payload.received_at),
        verification=payload.verification,
        error=payload.error,
    )


async def list_quarantine(store: Store) -> list[QuarantineItem]:
    """Every payload waiting in quarantine, oldest first."""
    return [_item(payload) for payload in await store.quarantined()]


async def quarantined_payload(store: Store, quarantine_id: int) -> QuarantinedPayload | None:
    """One waiting payload, body and headers included; None when there is no such payload.
    Quarantine holds few payloads (each one is a provider's bug or ours): no query of its own."""
    return next((p for p in await store.quarantined() if p.id == quarantine_id), None)


async def drop_quarantined(store: Store, quarantine_id: int) -> bool:
    """Delete one waiting payload for good; False when there is no such payload waiting."""
    return await store.drop_quarantined(quarantine_id)


class QuarantinePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[QuarantineItem]
    next_cursor: str | None


async def quarantine_page(store: Store, *, limit: int, cursor: str | None) -> QuarantinePage:
    """One page of what waits in quarantine, newest first (received_at, then id). Quarantine
    holds few payloads (each one is a provider's bug or ours), so this pages in memory."""
    check_limit(limit)
    after = None if cursor is None else decode_cursor(cursor, tuple[float, int])
    waiting = sorted(await store.quarantined(), key=lambda p: (p.received_at, p.id), reverse=True)
    if after is not None:
        waiting = [p for p in waiting if (p.received_at, p.id) < after]
    page = waiting[:limit]
    last = page[-1] if len(waiting) > limit else None
    return QuarantinePage(
        items=[_item(payload) for payload in page],
        next_cursor=None if last is None else encode_cursor((last.received_at, last.id)),
    )


class ReprocessResult(msgspec.Struct, frozen=True, kw_only=True):
    released: int
    still_invalid: int


async def reprocess(store: Store, config: GatewayConfig) -> ReprocessResult:
    """Every waiting payload through its adapter again (`gateway reprocess`): how many became
    events (duplicates of a stored event included), how many still do not read."""
    report = await reprocess_quarantine(config, store, lambda _line: None)
    return ReprocessResult(released=report.released, still_invalid=report.still_invalid)

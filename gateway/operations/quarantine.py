"""`gateway quarantine`: what waits in quarantine, and dropping a payload an operator gave up on.

Items have the admin API's shape (CONTRACT.md 8): `{"id", "source", "received_at",
"verification", "error"}`, times in RFC 3339 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from gateway.store.base import Store

__all__ = ["QuarantineItem", "drop_quarantined", "list_quarantine"]


class QuarantineItem(msgspec.Struct, frozen=True, kw_only=True):
    """One payload waiting in quarantine (its body and headers stay in the store)."""

    id: int
    source: str
    received_at: str
    verification: str
    error: str


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


async def list_quarantine(store: Store) -> list[QuarantineItem]:
    """Every payload waiting in quarantine, oldest first."""
    return [
        QuarantineItem(
            id=payload.id,
            source=payload.source,
            received_at=_rfc3339(payload.received_at),
            verification=payload.verification,
            error=payload.error,
        )
        for payload in await store.quarantined()
    ]


async def drop_quarantined(store: Store, quarantine_id: int) -> bool:
    """Delete one waiting payload for good; False when there is no such payload waiting."""
    return await store.drop_quarantined(quarantine_id)

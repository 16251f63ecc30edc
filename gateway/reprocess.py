"""`gateway reprocess`: quarantined payloads through their adapters again (after an upgrade, or a
fix on the provider's side). A payload that now reads becomes an event like any other, routed
by today's config; one that still fails stays in quarantine with the new reason."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import msgspec

from adapters.errors import InvalidPayload
from gateway.config import GatewayConfig
from gateway.routing import Router
from gateway.store.base import NewEvent, Store
from schemas.event import Verification, encode_event

__all__ = ["ReprocessReport", "reprocess_quarantine"]


class ReprocessReport(msgspec.Struct, kw_only=True):
    """Payloads released, still invalid or skipped; and the events the released ones became
    (several from one payload of a batch provider), new or already stored."""

    released: int = 0
    accepted: int = 0
    duplicate: int = 0
    still_invalid: int = 0
    skipped: int = 0


async def reprocess_quarantine(
    config: GatewayConfig, store: Store, say: Callable[[str], None]
) -> ReprocessReport:
    report = ReprocessReport()
    router = Router(config.routes)
    for payload in await store.quarantined():
        settings = config.sources.get(payload.source)
        if settings is None:
            say(f"quarantine {payload.id}: source {payload.source!r} is no longer configured")
            report.skipped += 1
            continue
        adapter = config.adapters[settings.adapter]
        received_at = datetime.fromtimestamp(payload.received_at, UTC)
        verification = cast(Verification, payload.verification)
        try:
            # One event, or a batch provider's several (released together).
            events = adapter.normalize_all(
                payload.body, payload.headers, settings, received_at, verification
            )
        except InvalidPayload as error:
            await store.note_quarantine_error(payload.id, error.detail)
            say(f"quarantine {payload.id}: still invalid: {error.detail}")
            report.still_invalid += 1
            continue
        new_events = []
        for event in events:
            subscribers = router.subscribers_for(payload.source, event.type)
            new_events.append(
                NewEvent(
                    id=event.id,
                    source=payload.source,
                    type=event.type,
                    received_at=payload.received_at,
                    body=encode_event(event),
                    subscribers=subscribers,
                    subject=event.subject or None,
                    ordered=config.ordered(subscribers),
                    status=event.data.status,
                )
            )
        outcomes = await store.release_quarantined(payload.id, new_events)
        report.released += 1
        if not events:
            say(f"quarantine {payload.id}: released, a batch of no events")
        for event, outcome in zip(events, outcomes, strict=True):
            say(f"quarantine {payload.id}: {outcome} as {event.id} ({event.type})")
            if outcome == "accepted":
                report.accepted += 1
            else:
                report.duplicate += 1
    return report

"""Dead letters: deliveries that used up their schedule (or were refused for good), and
redriving them once the subscriber is fixed."""

from __future__ import annotations

import time

import msgspec

from gateway.config import GatewayConfig
from gateway.operations.errors import UnknownSubscriber
from gateway.operations.paging import check_limit, decode_cursor, encode_cursor
from gateway.store.base import Store
from gateway.times import rfc3339
from gateway.tracing import Tracing

__all__ = ["DeadLetterItem", "DeadLetterPage", "list_dead_letters", "redrive"]


class DeadLetterItem(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    subscriber: str
    # Every attempt recorded for the delivery, those before a redrive or replay included: the
    # count the event's page lists (a redrive restarts the retry schedule, not the history).
    attempts: int
    last_error: str | None
    dead_at: str


class DeadLetterPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[DeadLetterItem]
    next_cursor: str | None


async def list_dead_letters(
    store: Store, *, subscriber: str | None, limit: int, cursor: str | None
) -> DeadLetterPage:
    """One page of dead letters (of one subscriber, or all), newest first."""
    check_limit(limit)
    after = None if cursor is None else decode_cursor(cursor, tuple[float, int])
    rows = await store.dead_letter_page(subscriber=subscriber, after=after, limit=limit + 1)
    page = rows[:limit]
    last = page[-1] if len(rows) > limit else None
    return DeadLetterPage(
        items=[
            DeadLetterItem(
                event_id=row.event_id,
                subscriber=row.subscriber,
                attempts=row.attempts,
                last_error=row.last_error,
                dead_at=rfc3339(row.dead_at),
            )
            for row in page
        ],
        next_cursor=None if last is None else encode_cursor((last.dead_at, last.delivery_id)),
    )


async def redrive(
    store: Store,
    config: GatewayConfig,
    *,
    subscriber: str | None,
    since: float | None,
    until: float | None,
    tracing: Tracing | None = None,
) -> int:
    """Make dead letters pending again, due now (of one subscriber, or all; `since` and
    `until` bound when they died); how many. UnknownSubscriber for a name not configured.
    With `tracing`, the redrive starts one new trace, which every redriven delivery's attempts
    belong to (each linked to its own event's trace: docs/reference/traces.md)."""
    if subscriber is not None and subscriber not in config.subscribers:
        raise UnknownSubscriber(subscriber)
    trace = None if tracing is None else tracing.new_trace("redrive", None)
    return await store.redrive(
        now=time.time(),
        subscriber=subscriber,
        since=since,
        until=until,
        traceparent=None if trace is None else trace.traceparent,
        tracestate=None if trace is None else trace.tracestate,
    )

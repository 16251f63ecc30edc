"""Event search and one event's detail: what the provider sent became which event, where it
went, and what each subscriber answered (docs/reference/admin.md, `GET /admin/api/events...`)."""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.operations.paging import check_limit, decode_cursor, encode_cursor
from gateway.store.base import DeliveryState, EventFilter, Store
from gateway.times import rfc3339

__all__ = [
    "AttemptView",
    "DeliveryDetail",
    "EventDetail",
    "EventFilters",
    "EventPage",
    "EventSummary",
    "event_detail",
    "search_events",
]

# `held` (behind an earlier delivery of its subject) is still pending to an operator.
DeliveryStatus = Literal["pending", "delivered", "dead"]


def _status(state: DeliveryState) -> DeliveryStatus:
    return "pending" if state == "held" else state


class EventFilters(msgspec.Struct, frozen=True, kw_only=True):
    """The contract's filters (None: any); `type` is a glob, `since`/`until` unix seconds."""

    source: str | None = None
    type: str | None = None
    subject: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None


class _EventTime(msgspec.Struct):
    time: str | None = None


_time_decoder = msgspec.json.Decoder(_EventTime)


class EventSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    source: str
    type: str
    subject: str | None
    time: str | None
    received_at: str
    deliveries: dict[str, DeliveryStatus]


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EventSummary]
    next_cursor: str | None


class AttemptView(msgspec.Struct, frozen=True, kw_only=True):
    at: str
    duration_ms: float
    outcome: Literal["delivered", "retry", "failed"]
    status_code: int | None
    error: str | None


class DeliveryDetail(msgspec.Struct, frozen=True, kw_only=True):
    subscriber: str
    state: DeliveryStatus
    attempts: list[AttemptView]
    # When the next attempt is due; null once delivered or dead.
    next_attempt_at: str | None


class EventDetail(msgspec.Struct, frozen=True, kw_only=True):
    # The canonical event exactly as stored and sent.
    event: msgspec.Raw
    deliveries: list[DeliveryDetail]


async def search_events(
    store: Store, filters: EventFilters, *, limit: int, cursor: str | None
) -> EventPage:
    """One page of events matching `filters`, newest first; `next_cursor` continues after its
    last item (null: nothing more)."""
    check_limit(limit)
    after = None if cursor is None else decode_cursor(cursor, tuple[float, str])
    # One more than asked: whether a next page exists, without a second query.
    rows = await store.search_events(
        EventFilter(
            source=filters.source,
            type_glob=filters.type,
            subject=filters.subject,
            status=filters.status,
            since=filters.since,
            until=filters.until,
        ),
        after=after,
        limit=limit + 1,
    )
    page = rows[:limit]
    items = [
        EventSummary(
            id=row.id,
            source=row.source,
            type=row.type,
            subject=row.subject,
            time=_time_decoder.decode(row.body).time,
            received_at=rfc3339(row.received_at),
            deliveries={name: _status(state) for name, state in row.deliveries.items()},
        )
        for row in page
    ]
    last = page[-1] if len(rows) > limit else None
    return EventPage(
        items=items,
        next_cursor=None if last is None else encode_cursor((last.received_at, last.id)),
    )


async def event_detail(store: Store, event_id: str) -> EventDetail | None:
    """The stored event and each delivery's attempts; None when there is no such event."""
    record = await store.event_record(event_id)
    if record is None:
        return None
    return EventDetail(
        event=msgspec.Raw(record.body),
        deliveries=[
            DeliveryDetail(
                subscriber=delivery.subscriber,
                state=_status(delivery.state),
                attempts=[
                    AttemptView(
                        at=rfc3339(attempt.started_at),
                        duration_ms=round(attempt.duration * 1000, 3),
                        outcome=attempt.outcome,
                        status_code=attempt.status_code,
                        error=attempt.error,
                    )
                    for attempt in delivery.attempts
                ],
                next_attempt_at=(
                    rfc3339(delivery.next_attempt_at)
                    if delivery.state in ("pending", "held")
                    else None
                ),
            )
            for delivery in record.deliveries
        ],
    )

"""Rows into the interface's structs, and an attempt into its row, for both SQL backends: each
struct is read from one column order, which both backends' SELECTs (and INSERTs) follow (their
drivers return numbers and bytes in their own types: SQLite's memoryview, psycopg's
Decimal-free floats; these make them the struct's)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from gateway.store.base import (
    Attempt,
    ClaimedDelivery,
    DeadLetter,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    EventRow,
    QuarantinedPayload,
)

__all__ = [
    "attempt_values",
    "claimed_delivery",
    "dead_letter",
    "event_record",
    "event_row",
    "quarantined_payload",
]

Row = Sequence[Any]


def quarantined_payload(row: Row) -> QuarantinedPayload:
    """(id, source, received_at, body, headers, verification, error)"""
    return QuarantinedPayload(
        id=int(row[0]),
        source=row[1],
        received_at=float(row[2]),
        body=bytes(row[3]),
        headers=msgspec.json.decode(row[4], type=dict[str, str]),
        verification=row[5],
        error=row[6],
    )


def claimed_delivery(row: Row, *, lease_token: int) -> ClaimedDelivery:
    """(delivery id, event_id, subscriber, attempts, created_at, next_attempt_at, -, body,
    source, type, traceparent, tracestate), leased under `lease_token`."""
    return ClaimedDelivery(
        delivery_id=int(row[0]),
        event_id=row[1],
        subscriber=row[2],
        attempts=int(row[3]),
        created_at=float(row[4]),
        due_at=float(row[5]),
        lease_token=lease_token,
        body=bytes(row[7]),
        source=row[8],
        event_type=row[9],
        traceparent=row[10],
        tracestate=row[11],
    )


def event_row(row: Row, deliveries: dict[str, DeliveryState]) -> EventRow:
    """(id, source, type, subject, received_at, body), and its deliveries' states."""
    return EventRow(
        id=row[0],
        source=row[1],
        type=row[2],
        subject=row[3],
        received_at=float(row[4]),
        body=bytes(row[5]),
        deliveries=deliveries,
    )


def event_record(
    event_id: str, event: Row, deliveries: Iterable[Row], attempts: Iterable[Row]
) -> EventRecord:
    """An event's (received_at, body), its deliveries' (id, subscriber, state,
    next_attempt_at) and their attempts' (delivery_id, started_at, duration, outcome,
    status_code, error, response_excerpt), both in the order they are to be shown."""
    delivery_rows = list(deliveries)
    by_delivery: Mapping[int, list[Attempt]] = {int(row[0]): [] for row in delivery_rows}
    for row in attempts:
        by_delivery[int(row[0])].append(
            Attempt(
                delivery_id=int(row[0]),
                started_at=float(row[1]),
                duration=float(row[2]),
                outcome=row[3],
                status_code=row[4],
                error=row[5],
                response_excerpt=row[6],
            )
        )
    return EventRecord(
        id=event_id,
        received_at=float(event[0]),
        body=bytes(event[1]),
        deliveries=tuple(
            DeliveryRecord(
                subscriber=row[1],
                state=row[2],
                next_attempt_at=float(row[3]),
                attempts=tuple(by_delivery[int(row[0])]),
            )
            for row in delivery_rows
        ),
    )


def attempt_values(attempt: Attempt) -> tuple[Any, ...]:
    """`attempt` as a row of the attempts table, in `event_record`'s order: delivery_id,
    started_at, duration, outcome, status_code, error, response_excerpt."""
    return (
        attempt.delivery_id,
        attempt.started_at,
        attempt.duration,
        attempt.outcome,
        attempt.status_code,
        attempt.error,
        attempt.response_excerpt,
    )


def dead_letter(row: Row) -> DeadLetter:
    """(delivery id, event_id, subscriber, attempts, last_error, finished_at)"""
    return DeadLetter(
        delivery_id=int(row[0]),
        event_id=row[1],
        subscriber=row[2],
        attempts=int(row[3]),
        last_error=row[4],
        dead_at=float(row[5]),
    )

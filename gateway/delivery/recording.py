"""Attempts on record: the store's rows and the deliveries' next states, then the circuit, the
metrics and the log lines, each a thin step acting on the decisions already made
(gateway/delivery/decide.py).

A batch of sends (gateway/delivery/transport.py `send_batch`) is recorded as one: its attempts
in one store write, the circuit updated once over all their answers. Each attempt still has
its own row, fencing token, metrics and log line: a batch is how they travel, not what they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import structlog

from gateway.delivery.decide import Dead, Decision, Delivered, RetryAt, attempt_outcome
from gateway.delivery.shared_circuit import update_after_attempts
from gateway.delivery.subscriber_state import SubscriberState
from gateway.delivery.transport import SendResult
from gateway.metrics import Metrics
from gateway.store.base import (
    Attempt,
    AttemptRecord,
    Claim,
    ClaimedDelivery,
    ClaimRequest,
    Store,
)
from gateway.times import rfc3339

__all__ = ["Answer", "account", "record", "record_then_claim"]

log = structlog.get_logger("gateway.delivery")


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt, answered: the delivery it was made on, when it started and finished, the
    transport's result and the decision taken on it."""

    delivery: ClaimedDelivery
    started: float
    finished: float
    result: SendResult
    decision: Decision


async def record(
    store: Store, subscriber: SubscriberState, answers: Sequence[Answer], *, probe: str | None
) -> list[bool]:
    """Record the attempts and their decisions, then the circuit after those that applied;
    for each, whether it applied (False: a stale lease, counted nowhere). `probe`: the mark of
    the circuit's probe when these attempts were it."""
    records = [_record_of(answer) for answer in answers]
    if len(records) == 1:
        # A lone attempt joins the others waiting for the store's group commit, as ever.
        (lone,) = records
        applied = [
            await store.record_attempt(lone.attempt, lone.decision, lease_token=lone.lease_token)
        ]
    else:
        applied = await store.record_attempts(records)
    await _update_circuit(store, subscriber, answers, applied, probe=probe)
    return applied


async def record_then_claim(
    store: Store, subscriber: SubscriberState, answers: Sequence[Answer], claim: ClaimRequest
) -> tuple[list[bool], Claim]:
    """`record`, with the claim of the subscriber's next batch in the same store write (never
    a probe's: that is a batch of one, on its own)."""
    applied, claimed = await store.record_attempts_then_claim(
        [_record_of(answer) for answer in answers], claim
    )
    await _update_circuit(store, subscriber, answers, applied, probe=None)
    return applied, claimed


async def _update_circuit(
    store: Store,
    subscriber: SubscriberState,
    answers: Sequence[Answer],
    applied: Sequence[bool],
    *,
    probe: str | None,
) -> None:
    counted = [
        (answer.result, answer.finished) for answer, ok in zip(answers, applied, strict=True) if ok
    ]
    await update_after_attempts(store, subscriber, counted, probe)


def account(metrics: Metrics, subscriber: SubscriberState, answer: Answer, applied: bool) -> None:
    """One attempt's metrics and log line (in its span, so the line carries its trace)."""
    fields = {
        "event_id": answer.delivery.event_id,
        "subscriber": subscriber.config.name,
        "attempt": answer.delivery.attempts + 1,
    }
    if not applied:
        # Our lease was taken over (or the delivery settled meanwhile): the store kept
        # what the newer holder recorded, and this attempt counts nowhere.
        log.warning("stale_attempt_record", **fields)
        return
    _count(metrics, subscriber, answer)
    _log(answer.decision, answer.result, fields)


def _record_of(answer: Answer) -> AttemptRecord:
    result = answer.result
    return AttemptRecord(
        Attempt(
            delivery_id=answer.delivery.delivery_id,
            started_at=answer.started,
            duration=answer.finished - answer.started,
            outcome=attempt_outcome(answer.decision),
            status_code=result.status_code,
            error=result.error,
            response_excerpt=result.response_excerpt,
        ),
        answer.decision,
        answer.delivery.lease_token,
    )


def _count(metrics: Metrics, subscriber: SubscriberState, answer: Answer) -> None:
    series = metrics.delivery(subscriber.config.name)
    decision = answer.decision
    series.attempt(attempt_outcome(decision))
    if isinstance(decision, Delivered):
        # From when it became due, not when the event was stored: a replay of an old event
        # does not count the event's age.
        series.delivered(max(0.0, answer.finished - answer.delivery.due_at))
    elif isinstance(decision, Dead):
        series.dead_letter()


def _log(decision: Decision, result: SendResult, fields: dict[str, object]) -> None:
    if isinstance(decision, Delivered):
        log.info("delivered", **fields)
    elif isinstance(decision, RetryAt):
        log.info(
            "retry_scheduled",
            error=result.error,
            status=result.status_code,
            next_attempt_at=rfc3339(decision.at),
            **fields,
        )
    else:
        log.warning("dead_letter", error=result.error, status=result.status_code, **fields)

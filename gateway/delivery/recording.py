"""An attempt on record: the store's row and the delivery's next state, then the circuit, the
metrics and the log line, each a thin step acting on the decision already made
(gateway/delivery/decide.py)."""

from __future__ import annotations

import structlog

from gateway.delivery.decide import Dead, Decision, Delivered, RetryAt, attempt_outcome
from gateway.delivery.shared_circuit import update_after_attempt
from gateway.delivery.subscriber_state import SubscriberState
from gateway.delivery.transport import SendResult
from gateway.metrics import Metrics
from gateway.store.base import Attempt, ClaimedDelivery, Store
from gateway.times import rfc3339

__all__ = ["record"]

log = structlog.get_logger("gateway.delivery")


async def record(
    store: Store,
    metrics: Metrics,
    subscriber: SubscriberState,
    delivery: ClaimedDelivery,
    started: float,
    finished: float,
    result: SendResult,
    decision: Decision,
    *,
    probe: str | None,
) -> None:
    """Thin steps acting on the decision: record it, then the circuit, metrics and log.
    `probe`: the mark of the circuit's probe when this attempt was it."""
    applied = await store.record_attempt(
        Attempt(
            delivery_id=delivery.delivery_id,
            started_at=started,
            duration=finished - started,
            outcome=attempt_outcome(decision),
            status_code=result.status_code,
            error=result.error,
            response_excerpt=result.response_excerpt,
        ),
        decision,
        lease_token=delivery.lease_token,
    )
    fields = {
        "event_id": delivery.event_id,
        "subscriber": subscriber.config.name,
        "attempt": delivery.attempts + 1,
    }
    if not applied:
        # Our lease was taken over (or the delivery settled meanwhile): the store kept
        # what the newer holder recorded, and this attempt counts nowhere.
        log.warning("stale_attempt_record", **fields)
        return
    await update_after_attempt(store, subscriber, result, finished, probe)
    _count(metrics, subscriber, delivery, decision, finished)
    _log(decision, result, fields)


def _count(
    metrics: Metrics,
    subscriber: SubscriberState,
    delivery: ClaimedDelivery,
    decision: Decision,
    finished: float,
) -> None:
    name = subscriber.config.name
    outcome = attempt_outcome(decision)
    metrics.delivery_attempts.labels(subscriber=name, outcome=outcome).inc()
    if isinstance(decision, Delivered):
        # From when it became due, not when the event was stored: a replay of an old event
        # does not count the event's age.
        metrics.delivered_latency.labels(subscriber=name).observe(
            max(0.0, finished - delivery.due_at)
        )
    elif isinstance(decision, Dead):
        metrics.dead_letters.labels(subscriber=name).inc()


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

"""decide(): what becomes of a delivery after an attempt, as a value
(docs/reference/delivery.md)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.decide import Dead, Delivered, RetryAt, attempt_outcome, decide
from gateway.delivery.retry import MAX_RETRY_AFTER, RetryPolicy
from gateway.delivery.transport import SendResult

NOW = 1_700_000_000.0
RETRY = SendResult(outcome="retry", status_code=503, error="HTTP 503")
TIMEOUT = SendResult(outcome="retry", error="timeout")
FAILED = SendResult(outcome="failed", status_code=400, error="HTTP 400")
GONE = SendResult(outcome="failed", status_code=410, error="HTTP 410")
DELIVERED = SendResult(outcome="delivered", status_code=200)


def test_a_2xx_is_delivered_whatever_the_attempt() -> None:
    policy = RetryPolicy([1, 2])
    for attempts_made in (1, 3, 10):
        decision = decide(DELIVERED, attempts_made, policy, NOW)
        assert decision == Delivered()
        assert attempt_outcome(decision) == "delivered"


@pytest.mark.parametrize("result", [FAILED, GONE], ids=["400", "410"])
def test_a_permanent_failure_is_dead_at_once(result: SendResult) -> None:
    decision = decide(result, 1, RetryPolicy([1, 2, 3]), NOW)
    assert decision == Dead()
    assert attempt_outcome(decision) == "failed"


@pytest.mark.parametrize("result", [RETRY, TIMEOUT], ids=["503", "timeout"])
def test_a_retryable_failure_retries_at_now_plus_the_scheduled_delay(result: SendResult) -> None:
    policy = RetryPolicy([10, 20], random.Random(1))
    first = decide(result, 1, policy, NOW)
    assert isinstance(first, RetryAt)
    assert NOW + 10 <= first.at <= NOW + 11
    assert attempt_outcome(first) == "retry"
    second = decide(result, 2, policy, NOW)
    assert isinstance(second, RetryAt)
    assert NOW + 20 <= second.at <= NOW + 22


def test_the_last_attempt_of_the_schedule_is_dead_and_recorded_as_failed() -> None:
    policy = RetryPolicy([10, 20])
    decision = decide(RETRY, 3, policy, NOW)
    assert decision == Dead()
    assert attempt_outcome(decision) == "failed"


def test_retry_after_is_honoured_up_to_a_day() -> None:
    policy = RetryPolicy([1])
    asked = SendResult(outcome="retry", status_code=429, retry_after=600.0)
    assert decide(asked, 1, policy, NOW) == RetryAt(at=NOW + 600.0)
    greedy = SendResult(outcome="retry", status_code=429, retry_after=30 * 86400.0)
    assert decide(greedy, 1, policy, NOW) == RetryAt(at=NOW + MAX_RETRY_AFTER)


@given(
    schedule=st.lists(st.floats(min_value=0, max_value=3600), max_size=10),
    outcome=st.sampled_from(["delivered", "retry", "failed"]),
)
def test_never_more_than_one_attempt_more_than_the_schedule_has_delays(
    schedule: list[float], outcome: str
) -> None:
    """Attempt k (1-based) may be followed by another only while k <= len(schedule), and
    never into the past."""
    policy = RetryPolicy(schedule)
    result = SendResult(outcome=outcome)  # type: ignore[arg-type]
    for attempts_made in range(1, len(schedule) + 3):
        decision = decide(result, attempts_made, policy, NOW)
        if isinstance(decision, RetryAt):
            assert outcome == "retry"
            assert attempts_made <= len(schedule)
            assert decision.at >= NOW
        elif attempts_made > len(schedule) and outcome != "delivered":
            assert decision == Dead()

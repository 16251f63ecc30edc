"""When to try a failed delivery again, decided by tenacity, waited out by the store.

tenacity holds the policy of each subscriber: which outcomes are worth another attempt
(`retry_if_result`), when the schedule is exhausted (`stop_after_attempt`), and how long to wait
(`ScheduleWait`). It does not sleep: the dispatcher asks it after each attempt and persists the
answer as the delivery's next attempt time. A wait of 20 hours then costs one row, not a
coroutine, and a restart loses nothing.

Attempt 1 is immediate. After attempt k fails, attempt k+1 waits `schedule[k-1]` seconds plus up
to 10% jitter, or the subscriber's `Retry-After` when that is longer (capped at 24 h). After
`1 + len(schedule)` attempts the delivery is a dead letter (docs/reference/delivery.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
)
from tenacity.wait import wait_base

from gateway.delivery.transport import SendResult

__all__ = ["MAX_RETRY_AFTER", "RetryPolicy", "ScheduleWait", "retry_delay", "worth_retrying"]

MAX_RETRY_AFTER = 24 * 3600.0
JITTER = 0.10


def retry_delay(
    attempts_made: int,
    schedule: Sequence[float],
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before the next attempt, after `attempts_made` attempts (1 after the first)."""
    scheduled = schedule[min(attempts_made, len(schedule)) - 1]
    # Jitter spreads a burst of failures so their retries do not arrive as one burst again.
    delay = scheduled + (rng or random).uniform(0, JITTER * scheduled)
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, MAX_RETRY_AFTER)
    return delay


class ScheduleWait(wait_base):
    """tenacity wait strategy: the subscriber's schedule, jitter, and its Retry-After."""

    def __init__(self, schedule: Sequence[float], rng: random.Random | None = None) -> None:
        self.schedule = tuple(schedule)
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        result = outcome.result() if outcome is not None and not outcome.failed else None
        retry_after = result.retry_after if isinstance(result, SendResult) else None
        return retry_delay(retry_state.attempt_number, self.schedule, retry_after, self.rng)


def worth_retrying(result: SendResult) -> bool:
    """The subscriber may take it later: a timeout, a connection error, a 408, 425, 429 or 5xx
    (the transport says which, as `retry`). The circuit breaker counts exactly these."""
    return result.outcome == "retry"


class RetryPolicy:
    """One subscriber's retry policy, asked after each attempt."""

    def __init__(self, schedule: Sequence[float], rng: random.Random | None = None) -> None:
        self._retrying = Retrying(
            retry=retry_if_result(worth_retrying),
            stop=stop_after_attempt(1 + len(schedule)),
            wait=ScheduleWait(schedule, rng),
        )

    def next_delay(self, attempts_made: int, result: SendResult) -> float | None:
        """Seconds until the next attempt, or None: delivered, failed for good, or exhausted."""
        state = RetryCallState(self._retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempts_made
        state.set_result(result)
        if not self._retrying.retry(state) or self._retrying.stop(state):
            return None
        return self._retrying.wait(state)

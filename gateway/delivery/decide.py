"""What becomes of a delivery after an attempt, decided as a value before anything is written.

As in Svix's worker (prepare -> call -> decide -> record), the decision is a pure function of
the attempt's result, the attempts made so far and the subscriber's retry policy. The store
records the decision it is handed and does not work it out again; the dispatcher's later steps
(circuit, metrics, log) act on the same value. The values themselves (`Delivered`, `RetryAt`,
`Dead`) are the store's vocabulary, defined below both (gateway/store/decisions.py).
"""

from __future__ import annotations

from typing import Literal

from gateway.delivery.retry import RetryPolicy
from gateway.delivery.transport import SendResult
from gateway.store.decisions import Dead, Decision, Delivered, RetryAt

__all__ = ["Dead", "Decision", "Delivered", "RetryAt", "attempt_outcome", "decide"]


def decide(result: SendResult, attempts_made: int, policy: RetryPolicy, now: float) -> Decision:
    """The delivery's fate after its `attempts_made`-th attempt answered `result` at `now`."""
    if result.outcome == "delivered":
        return Delivered()
    delay = policy.next_delay(attempts_made, result)
    if delay is None:
        return Dead()
    return RetryAt(at=now + delay)


def attempt_outcome(decision: Decision) -> Literal["delivered", "retry", "failed"]:
    """How the attempt is recorded: what became of the delivery. The last retryable failure of
    an exhausted schedule is a failure, not a retry."""
    if isinstance(decision, Delivered):
        return "delivered"
    if isinstance(decision, RetryAt):
        return "retry"
    return "failed"

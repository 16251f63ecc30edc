"""What becomes of a delivery after an attempt, as the store records it: delivered, retried at a
time, or dead.

The dispatcher decides (gateway/delivery/decide.py: a pure function of the attempt's result, the
attempts made so far and the subscriber's retry policy); the store records the value it is
handed and does not work it out again. The values live here, below both, so that the store needs
nothing of the dispatcher.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Dead", "Decision", "Delivered", "RetryAt", "state_after"]


class Delivered(msgspec.Struct, frozen=True, tag=True):
    """The subscriber acknowledged it: done."""


class RetryAt(msgspec.Struct, frozen=True, tag=True):
    """Worth another attempt, at unix time `at`."""

    at: float


class Dead(msgspec.Struct, frozen=True, tag=True):
    """Failed for good (a permanent answer, or no attempt left): a dead letter."""


Decision = Delivered | RetryAt | Dead


def state_after(
    decision: Decision, finished: float
) -> tuple[Literal["pending", "delivered", "dead"], float | None, float | None]:
    """The delivery's (state, next_attempt_at, finished_at) once an attempt that ended at
    `finished` is recorded with `decision`; a next_attempt_at of None leaves it as it was."""
    if isinstance(decision, RetryAt):
        return "pending", decision.at, None
    if isinstance(decision, Delivered):
        return "delivered", None, finished
    return "dead", None, finished

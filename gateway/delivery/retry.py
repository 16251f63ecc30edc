"""When to try a failed delivery again: one small pure function, as in Svix's worker.

Attempt 1 is immediate. After attempt k fails, attempt k+1 waits `schedule[k-1]` seconds plus up
to 10% jitter, or the subscriber's `Retry-After` when that is longer (capped at 24 h). After
`1 + len(schedule)` attempts the delivery is a dead letter.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["MAX_RETRY_AFTER", "retry_delay"]

MAX_RETRY_AFTER = 24 * 3600.0
JITTER = 0.10


def retry_delay(
    attempts_made: int,
    schedule: Sequence[float],
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the schedule is exhausted.

    `attempts_made` counts the attempt that just failed (1 after the first).
    """
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    scheduled = schedule[attempts_made - 1]
    # Jitter spreads a burst of failures so their retries do not arrive as one burst again.
    jitter = (rng or random).uniform(0, JITTER * scheduled)
    delay = scheduled + jitter
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, MAX_RETRY_AFTER)
    return delay

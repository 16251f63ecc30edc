"""One connection attempt for every send that needs it at the same moment.

A broker transport connects on its first send and again after losing the connection. With
`max_in_flight` sends arriving together, each would otherwise make its own attempt, one after
another behind a lock: against a broker that is down, 64 connection errors (or 64 connect
timeouts, each as long as the attempt's deadline) where one says it all. Here the sends that
waited while an attempt failed share its failure, and only a send that comes later tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["SharedConnect"]

T = TypeVar("T")


class SharedConnect(Generic[T]):
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._finished = 0  # connection attempts that have ended, either way
        self._failure: Exception | None = None

    async def get(self, current: Callable[[], T | None], connect: Callable[[], Awaitable[T]]) -> T:
        """`current()` when it is usable (not None), else what `connect()` makes; raises what
        the attempt made while this send waited raised, rather than attempting again."""
        seen = self._finished
        async with self._lock:
            usable = current()
            if usable is not None:
                return usable
            if self._finished != seen and self._failure is not None:
                raise self._failure  # an attempt ended while this send waited, and failed
            try:
                made = await connect()
            except Exception as error:
                self._failure = error
                raise
            finally:
                self._finished += 1
            self._failure = None
            return made

"""Wake-ups across nodes: a transaction that makes a delivery pending notifies
`finrelay_deliveries` (`NOTIFY`, or pg_notify inside the statement that made it pending:
gateway/store/postgres/ingest.py); the notification goes out at commit, and PostgreSQL folds a
transaction's identical notifications into one. One LISTEN connection per store, outside the
pool, calls the `watch_new_deliveries` callbacks, and reconnects with a bounded backoff. The
dispatcher's poll is the fallback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import LiteralString

import psycopg
import structlog

from gateway.store.postgres.connection import Database

__all__ = ["CHANNEL", "NOTIFY", "Listener"]

log = structlog.get_logger("gateway.store")

CHANNEL = "finrelay_deliveries"
LISTEN_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)

NOTIFY: LiteralString = "SELECT pg_notify('finrelay_deliveries', '')"


class Listener:
    """The LISTEN task of one store: calls each of `watchers` on every notification (and once
    after a reconnection: what was committed while nobody listened is due now)."""

    def __init__(self, database: Database, watchers: list[Callable[[], None]]) -> None:
        self._database = database
        self._watchers = watchers
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="store-listener"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _wake(self) -> None:
        for watcher in self._watchers:
            try:
                watcher()
            except Exception:
                log.exception("delivery_watcher_failed")

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                connection = await self._database.connect()
                async with connection:
                    await connection.execute("LISTEN finrelay_deliveries")
                    if failures:
                        log.info("store_listening_again", database=self._database.where)
                        # What was committed while nobody listened is due now.
                        self._wake()
                    failures = 0
                    async for _ in connection.notifies():
                        self._wake()
            except psycopg.Error as error:
                if failures == 0:
                    log.warning("store_listen_lost", error=str(self._database.unavailable(error)))
            except Exception:  # whatever it is, the listener must go on listening
                log.exception("store_listen_failed", database=self._database.where)
            delay = LISTEN_BACKOFF_SECONDS[min(failures, len(LISTEN_BACKOFF_SECONDS) - 1)]
            failures += 1
            await asyncio.sleep(delay)

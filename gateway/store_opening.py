"""Opening the store while the app already serves (docs/reference/nodes.md).

A node on a shared PostgreSQL may start while the database is down, or while another node
migrates the schema (the store's `open()` then waits on the migration lock). Meanwhile it must
answer /healthz and say 503 on /readyz and to webhooks, then start delivering once the store is
open, by itself. A store that refuses for good (a schema newer than this gateway) stops the
start instead: waiting would never end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from gateway.store.base import Store, StoreSchemaError, StoreUnavailable
from gateway.store.url import StoreUrl

__all__ = ["StoreOpening"]

log = structlog.get_logger("gateway")

FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 5.0


class StoreOpening:
    """`store.open()` in a task of its own: retried with backoff while the store is unavailable
    (when `wait_while_unavailable`), then `on_open()`; `on_refused(reason)` instead when it
    cannot be used (StoreSchemaError, or unavailable without waiting). Every reason it shows
    is scrubbed of the URL's secrets."""

    def __init__(
        self,
        store: Store,
        url: StoreUrl,
        *,
        wait_while_unavailable: bool,
        on_open: Callable[[], None],
        on_refused: Callable[[str], None],
    ) -> None:
        self._store = store
        self._url = url
        self._wait = wait_while_unavailable
        self._on_open = on_open
        self._on_refused = on_refused
        self._task: asyncio.Task[None] | None = None
        self.is_open = False
        # Why it is not open yet, for /readyz.
        self.waiting_for = "the store is being opened (another node may be migrating its schema)"

    def start(self) -> None:
        self._task = asyncio.create_task(self._open(), name="store-opening")

    async def settled(self, seconds: float) -> None:
        """Wait up to `seconds` for the store to open or be refused: a store that opens at once
        (SQLite's file) is open before the app answers anything, as before."""
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=seconds)

    async def stop(self) -> None:
        """Give up opening (the app stops before the store opened)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _open(self) -> None:
        delay = FIRST_RETRY_SECONDS
        while True:
            try:
                await self._store.open()
            except StoreSchemaError as error:
                self.waiting_for = self._url.scrub(str(error))
                self._on_refused(self.waiting_for)
                return
            except StoreUnavailable as error:
                reason = self._url.scrub(f"cannot open the store: {error}")
                if not self._wait:
                    self.waiting_for = reason
                    self._on_refused(reason)
                    return
                self.waiting_for = f"waiting for the store: {reason}"
                log.warning("store_unavailable", detail=reason, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            self.is_open = True
            self._on_open()
            return

"""Retention: delivered events, their deliveries and attempts, and stale quarantined payloads
older than `[store] retention_days` are deleted, so the store does not grow forever.

It runs in the background of every gateway process, in small batches with a pause between
them: each batch is one short transaction in the writer's queue, so ingest waits behind it for
a few milliseconds at most, never for the whole purge. An event with a pending or dead delivery
is kept (the store decides that, `Store.purge_expired`) until it is delivered, redriven or
dropped. With `--workers N` every worker runs it; they delete different rows or none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from gateway.store.base import Store, StoreUnavailable

__all__ = ["purge_expired", "purge_periodically"]

log = structlog.get_logger("gateway.retention")

SECONDS_PER_DAY = 86_400.0
# Rows per transaction, and the pause between two: a purge of a million old events takes a few
# minutes of background work instead of one long write that would hold up ingest.
BATCH_SIZE = 500
PAUSE_SECONDS = 0.05
# Once soon after start, then every few minutes.
FIRST_PURGE_SECONDS = 30.0
PURGE_EVERY_SECONDS = 300.0


async def purge_expired(
    store: Store,
    *,
    before: float,
    batch_size: int = BATCH_SIZE,
    pause: float = PAUSE_SECONDS,
) -> tuple[int, int]:
    """Delete what expired before `before`, batch by batch; (events, quarantined) deleted."""
    events = quarantined = 0
    after = 0.0
    while True:
        purged = await store.purge_expired(before=before, after=after, limit=batch_size)
        events += purged.events
        quarantined += purged.quarantined
        if purged.scanned_to is None and purged.quarantined < batch_size:
            return events, quarantined
        if purged.scanned_to is not None:
            after = purged.scanned_to
        await asyncio.sleep(pause)


async def purge_periodically(
    store: Store,
    retention_days: float,
    *,
    clock: Callable[[], float] = time.time,
    first: float = FIRST_PURGE_SECONDS,
    every: float = PURGE_EVERY_SECONDS,
) -> None:
    """The background task: purge, then sleep, forever; a failure is logged and the next round
    tries again (a full disk, say, is no reason to stop retention for good)."""
    await asyncio.sleep(first)
    while True:
        started = time.monotonic()
        try:
            before = clock() - retention_days * SECONDS_PER_DAY
            events, quarantined = await purge_expired(store, before=before)
        except StoreUnavailable as error:
            log.warning("retention_skipped", detail=str(error))
        except Exception:
            log.exception("retention_failed")
        else:
            if events or quarantined:
                log.info(
                    "retention_purged",
                    events=events,
                    quarantined=quarantined,
                    seconds=round(time.monotonic() - started, 3),
                )
        await asyncio.sleep(every)

"""The dispatcher: due deliveries out of the store, through their transport, outcomes back in.

A dispatch is a chain of small steps: claim (a lease, so no other worker sends the same delivery
meanwhile) -> prepare the message (sign this attempt) -> send through the subscriber's transport
-> record the attempt and its consequence (delivered, retry at a time, or dead letter). The
schedule lives in the store, not in memory, so a subscriber that is down for a day costs disk,
and a restart loses no pending retry.

Work is bounded twice: a subscriber never has more than `max_in_flight` sends under way, and the
dispatcher claims only for subscribers with a free slot, so a slow subscriber leaves its backlog
in the store rather than in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

from gateway.config import SubscriberConfig
from gateway.delivery.retry import retry_delay
from gateway.delivery.transport import OutboundMessage, SendResult, Transport
from gateway.metrics import Metrics
from gateway.signing import SigningKeys
from gateway.store.base import Attempt, ClaimedDelivery, Store, StoreUnavailable

__all__ = ["Dispatcher"]

log = structlog.get_logger("gateway.delivery")

CLAIM_BATCH = 256
# How often to look for work nobody told us about (another process's events, due retries).
POLL_SECONDS = 1.0


class _Subscriber:
    """What the dispatcher holds per subscriber: its transport, keys and free slots."""

    def __init__(self, config: SubscriberConfig, transport: Transport) -> None:
        self.config = config
        self.transport = transport
        self.keys = SigningKeys(config.secrets)
        self.in_flight = 0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        subscribers: Mapping[str, SubscriberConfig],
        transports: Mapping[str, Transport],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._subscribers = {
            name: _Subscriber(config, transports[name]) for name, config in subscribers.items()
        }
        self._metrics = metrics
        self._clock = clock
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        longest_timeout = max((s.timeout_seconds for s in subscribers.values()), default=10.0)
        # A lease outlives any send: a worker that still holds it is still working on it.
        self._lease_seconds = max(30.0, 3 * longest_timeout)

    def notify(self) -> None:
        """New deliveries were stored: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                claimed = await self._claim()
            except StoreUnavailable as error:
                log.warning("claim_failed", error=str(error))
                claimed = []
            for delivery in claimed:
                subscriber = self._subscribers[delivery.subscriber]
                subscriber.in_flight += 1
                task = asyncio.create_task(self._dispatch(subscriber, delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if len(claimed) < CLAIM_BATCH:
                await self._sleep()

    async def _claim(self) -> list[ClaimedDelivery]:
        free = {
            name: subscriber.config.max_in_flight - subscriber.in_flight
            for name, subscriber in self._subscribers.items()
        }
        names = [name for name, slots in free.items() if slots > 0]
        if not names:
            return []
        claimed = await self._store.claim_due(
            now=self._clock(),
            limit=min(CLAIM_BATCH, sum(free[name] for name in names)),
            lease_seconds=self._lease_seconds,
            owner=self._owner,
            subscribers=names,
        )
        taken: list[ClaimedDelivery] = []
        for delivery in claimed:
            if delivery.subscriber not in self._subscribers:
                # Claimed because it was named, so this cannot happen; never drop silently.
                continue
            if free[delivery.subscriber] > 0:
                free[delivery.subscriber] -= 1
                taken.append(delivery)
        return taken

    async def _sleep(self) -> None:
        timeout = POLL_SECONDS
        with contextlib.suppress(StoreUnavailable):
            due = await self._store.next_due_at()
            if due is not None:
                timeout = min(POLL_SECONDS, max(0.0, due - self._clock()))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _dispatch(self, subscriber: _Subscriber, delivery: ClaimedDelivery) -> None:
        try:
            message = self._prepare(subscriber, delivery)
            started = self._clock()
            result = await subscriber.transport.send(message)
            await self._record(subscriber, delivery, started, result)
        except StoreUnavailable as error:
            # The lease runs out and the delivery is tried again: at least once, never lost.
            log.error("record_failed", event_id=delivery.event_id, error=str(error))
        finally:
            subscriber.in_flight -= 1
            self._wake.set()

    def _prepare(self, subscriber: _Subscriber, delivery: ClaimedDelivery) -> OutboundMessage:
        timestamp = int(self._clock())
        return OutboundMessage(
            webhook_id=delivery.event_id,
            webhook_timestamp=timestamp,
            webhook_signature=subscriber.keys.sign(delivery.event_id, timestamp, delivery.body),
            body=delivery.body,
        )

    async def _record(
        self,
        subscriber: _Subscriber,
        delivery: ClaimedDelivery,
        started: float,
        result: SendResult,
    ) -> None:
        finished = self._clock()
        attempts_made = delivery.attempts + 1
        next_attempt_at: float | None = None
        outcome = result.outcome
        if outcome == "retry":
            delay = retry_delay(attempts_made, subscriber.config.retry_schedule, result.retry_after)
            if delay is not None:
                next_attempt_at = finished + delay
        dead = outcome != "delivered" and next_attempt_at is None
        await self._store.record_attempt(
            Attempt(
                delivery_id=delivery.delivery_id,
                started_at=started,
                duration=finished - started,
                outcome=outcome,
                status_code=result.status_code,
                error=result.error,
                response_excerpt=result.response_excerpt,
            ),
            next_attempt_at=next_attempt_at,
            dead=dead,
        )
        name = subscriber.config.name
        self._metrics.delivery_attempts.labels(subscriber=name, outcome=outcome).inc()
        fields = {"event_id": delivery.event_id, "subscriber": name, "attempt": attempts_made}
        if outcome == "delivered":
            self._metrics.delivered_latency.labels(subscriber=name).observe(
                max(0.0, finished - delivery.created_at)
            )
            log.info("delivered", **fields)
        elif dead:
            self._metrics.dead_letters.labels(subscriber=name).inc()
            log.warning("dead_letter", error=result.error, status=result.status_code, **fields)
        else:
            log.info(
                "retry_scheduled", error=result.error, next_attempt_at=next_attempt_at, **fields
            )

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop claiming; let sends under way finish for a moment, then give their leases back."""
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(StoreUnavailable):
            await self._store.release_leases(self._owner)
        for subscriber in self._subscribers.values():
            await subscriber.transport.close()

"""The dispatcher: due deliveries out of the store, through their transport, outcomes back in.

A dispatch is a chain of small steps: claim (a lease, so no other worker sends the same delivery
meanwhile) -> prepare the message (sign this attempt) -> send through the subscriber's transport
-> record the attempt and its consequence: delivered, retry at the time the subscriber's tenacity
policy says (gateway/delivery/retry.py), or dead letter. The schedule lives in the store, not in
memory, so a subscriber that is down for a day costs disk, and a restart loses no pending retry.

Work is bounded twice: a subscriber never has more than `max_in_flight` sends under way, and the
dispatcher claims only for subscribers with a free slot, so a slow subscriber leaves its backlog
in the store rather than in memory. A subscriber whose circuit is open gets nothing but, when
its pause is over, a single probe (gateway/delivery/circuit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping

import msgspec
import structlog

from gateway.config import SubscriberConfig
from gateway.delivery.circuit import CLOSED, CircuitState, after_attempt, may_send
from gateway.delivery.retry import RetryPolicy
from gateway.delivery.transport import OutboundMessage, SendResult, Transport
from gateway.metrics import Metrics
from gateway.signing import SigningKeys
from gateway.store.base import Attempt, ClaimedDelivery, Store, StoreUnavailable

__all__ = ["Dispatcher"]

log = structlog.get_logger("gateway.delivery")

CLAIM_BATCH = 256
# How often to look for work nobody told us about (another process's events, due retries).
POLL_SECONDS = 1.0
# Never sleep less: a delivery that is due already would have been claimed, so a due time in
# the past is a race with a commit, and that commit's notify wakes us anyway.
MIN_SLEEP_SECONDS = 0.01
# After the store fails, wait this long before asking again, doubling up to the maximum.
STORE_BACKOFF_SECONDS = 0.5
MAX_STORE_BACKOFF_SECONDS = 30.0


class _Subscriber:
    """What the dispatcher holds per subscriber: transport, keys, policy, circuit, free slots."""

    def __init__(self, config: SubscriberConfig, transport: Transport) -> None:
        self.config = config
        self.transport = transport
        self.keys = SigningKeys(config.secrets)
        self.policy = RetryPolicy(config.retry_schedule)
        self.circuit: CircuitState = CLOSED
        self.in_flight = 0

    def free_slots(self, now: float) -> int:
        allowed = may_send(self.circuit, now)
        if allowed == "no":
            return 0
        if allowed == "probe":
            return 1 if self.in_flight == 0 else 0
        return self.config.max_in_flight - self.in_flight


_circuit_decoder = msgspec.json.Decoder(CircuitState)


def _pid_of(owner: str, host: str) -> int | None:
    """The pid in a lease owner `host:pid:dispatcher` of this host, else None."""
    owner_host, separator, rest = owner.rpartition(":")[0].rpartition(":")
    if not separator or owner_host != host or not rest.isdigit():
        return None
    return int(rest)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: running
    return True


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
        self._stopped = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self._circuits_read_at = float("-inf")
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        longest_timeout = max((s.timeout_seconds for s in subscribers.values()), default=10.0)
        # A lease outlives any send: a worker that still holds it is still working on it. Short
        # enough that a crashed worker's deliveries are soon taken up by another.
        self._lease_seconds = 3 * longest_timeout + 5

    def notify(self) -> None:
        """New deliveries were stored: look now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        """Run the dispatch loop in the background until `stop`."""
        self._running = asyncio.create_task(self.run(), name="dispatcher")

    async def _release_leases_of_the_dead(self) -> None:
        """Give back the leases of gateway processes on this host that no longer run (killed,
        or out of memory), so their deliveries go out now rather than when the leases run out.

        A process on another host, or one this cannot tell is gone, keeps its leases until they
        expire: a pid reused by a live process looks alive, which only means waiting.
        """
        host = socket.gethostname()
        try:
            owners = await self._store.lease_owners()
        except StoreUnavailable:
            return  # the leases still expire
        for owner in owners:
            pid = _pid_of(owner, host)
            if pid is None or pid == os.getpid() or _is_running(pid):
                continue
            with contextlib.suppress(StoreUnavailable):
                await self._store.release_leases(owner)
                log.info("leases_released", owner=owner, reason="owner is not running")

    async def run(self) -> None:
        await self._release_leases_of_the_dead()
        backoff = STORE_BACKOFF_SECONDS
        while not self._stopping:
            # Cleared before claiming: a notify from here on means work the claim may have missed.
            self._wake.clear()
            try:
                await self._refresh_circuits()
                claimed = await self._claim()
            except StoreUnavailable as error:
                # The disk is full or the database is down: ask again later, not in a loop.
                log.warning("claim_failed", error=str(error), retry_in=backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), backoff)
                backoff = min(backoff * 2, MAX_STORE_BACKOFF_SECONDS)
                continue
            backoff = STORE_BACKOFF_SECONDS
            if self._stopping:
                break  # claimed while stopping: not started; stop() gives the leases back
            for delivery in claimed:
                subscriber = self._subscribers[delivery.subscriber]
                subscriber.in_flight += 1
                task = asyncio.create_task(self._dispatch(subscriber, delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if len(claimed) < CLAIM_BATCH:
                await self._sleep()

    async def _refresh_circuits(self) -> None:
        """Circuits as the store has them: another process's probe, or `gateway enable`.
        Read at most once per poll interval: a busy loop claims far more often than that."""
        now = self._clock()
        if now - self._circuits_read_at < POLL_SECONDS:
            return
        self._circuits_read_at = now
        stored = await self._store.subscriber_circuits()
        for name, subscriber in self._subscribers.items():
            encoded = stored.get(name)
            subscriber.circuit = CLOSED if encoded is None else _circuit_decoder.decode(encoded)

    async def _claim(self) -> list[ClaimedDelivery]:
        now = self._clock()
        wanted = {
            name: slots
            for name, subscriber in self._subscribers.items()
            if (slots := min(subscriber.free_slots(now), CLAIM_BATCH)) > 0
        }
        # One claim per subscriber, issued together: the store commits them as one batch.
        claims = await asyncio.gather(
            *(
                self._store.claim_due(
                    subscriber=name,
                    now=now,
                    limit=slots,
                    lease_seconds=self._lease_seconds,
                    owner=self._owner,
                )
                for name, slots in wanted.items()
            )
        )
        return [delivery for claimed in claims for delivery in claimed]

    async def _sleep(self) -> None:
        """Wait for new work: a notify (stored, or a send finished and freed a slot), the next
        retry coming due, or the poll interval, whichever is first.

        Only subscribers with a free slot count: deliveries due to a saturated subscriber are
        waiting for a slot, and a finished send wakes us for those.
        """
        timeout = POLL_SECONDS
        now = self._clock()
        open_to_work = [name for name, sub in self._subscribers.items() if sub.free_slots(now)]
        if open_to_work:
            with contextlib.suppress(StoreUnavailable):
                due = await self._store.next_due_at(subscribers=open_to_work)
                if due is not None:
                    timeout = min(POLL_SECONDS, max(MIN_SLEEP_SECONDS, due - self._clock()))
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
        delay = subscriber.policy.next_delay(attempts_made, result)
        next_attempt_at = None if delay is None else finished + delay
        dead = result.outcome != "delivered" and next_attempt_at is None
        # An attempt's outcome is what became of the delivery: the last retryable failure of an
        # exhausted schedule is a failure, not a retry.
        outcome = "failed" if dead else result.outcome
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
        await self._update_circuit(subscriber, result, started, finished)

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
                "retry_scheduled",
                error=result.error,
                status=result.status_code,
                next_attempt_at=next_attempt_at,
                **fields,
            )

    async def _update_circuit(
        self, subscriber: _Subscriber, result: SendResult, started: float, now: float
    ) -> None:
        before = subscriber.circuit
        after = after_attempt(
            before,
            result,
            now,
            started=started,
            failure_threshold=subscriber.config.circuit_breaker_failures,
            open_seconds=subscriber.config.circuit_breaker_seconds,
        )
        if after == before:
            return
        subscriber.circuit = after
        await self._store.save_subscriber_circuit(
            subscriber.config.name, msgspec.json.encode(after)
        )
        if after.state != before.state:
            log.warning(
                "circuit_" + after.state,
                subscriber=subscriber.config.name,
                failures=after.failures,
                open_until=after.open_until or None,
            )

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop claiming; let sends under way finish for a moment, then give their leases back.

        The loop is awaited first: a claim under way when the signal came must not start sends
        after the ones to wait for were counted.
        """
        self._stopping = True
        self._stopped.set()
        self._wake.set()
        if self._running is not None:
            await self._running
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(StoreUnavailable):
            await self._store.release_leases(self._owner)
        for subscriber in self._subscribers.values():
            await subscriber.transport.close()

"""The dispatcher: due deliveries out of the store, through their transport, outcomes back in.

A dispatch is a chain of small steps: claim (a lease, so no other worker sends the same delivery
meanwhile) -> prepare the message (sign this attempt) -> send through the subscriber's transport
-> record the attempt and its consequence: delivered, retry at the time the subscriber's tenacity
policy says (gateway/delivery/retry.py), or dead letter. The schedule lives in the store, not in
memory, so a subscriber that is down for a day costs disk, and a restart loses no pending retry.

Work is bounded twice: a subscriber never has more than `max_in_flight` sends under way from the
whole gateway (the store's claim counts every process's and node's leases, docs/reference/nodes.md),
and the dispatcher claims only for subscribers with a free slot, so a slow subscriber leaves its
backlog in the store rather than in memory. A subscriber whose circuit is open gets nothing but,
when its pause is over, a single probe (gateway/delivery/circuit.py).

Nothing a subscriber or a bug does stops delivery: every send has a deadline (the subscriber's
`timeout_seconds`, around the whole attempt, whatever the transport), any exception a transport
raises is a recorded attempt that is retried, and the dispatch loop restarts itself after a
crash (`running` is False meanwhile, and /readyz says so). An attempt is recorded under the
lease token it was claimed with: a worker whose lease was taken over changes nothing.

A subscriber whose transport batches (a broker: gateway/delivery/transport.py) gets what a claim
leased in batches of up to half its `max_in_flight`, each sent together and recorded in one
store write; a batch all delivered claims the next in that same write and sends it at once, so
one batch is on the wire while the other is being written. Each message is still its own
attempt: its own signature, span, answer, decision, record under its own lease token, metrics
and log line. The probe of an open circuit goes alone, as ever.

Ordered subscribers (`ordering = "subject"`, docs/reference/ordering.md) need nothing here: the
store hands out only deliveries whose subject has nothing earlier pending (so a batch holds at
most one of each), and the transaction that records one delivered or dead releases the next. The
wake after every finished send makes the next claim pick that successor at once, not after a
poll or a backoff (a batch's next claim, written with its records, finds it already).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from gateway.config import SubscriberConfig
from gateway.delivery.attempt_trace import end_attempt_span, start_attempt_span
from gateway.delivery.circuit import (
    CLOSED,
    decode_circuit,
    encode_circuit,
    give_back_probe,
    may_send,
    take_probe,
)
from gateway.delivery.decide import Delivered, decide
from gateway.delivery.recording import Answer, account, record, record_then_claim
from gateway.delivery.shared_circuit import read_circuit, update_circuit
from gateway.delivery.subscriber_state import SubscriberState
from gateway.delivery.transport import OutboundMessage, SendResult, Transport, unexpected_error
from gateway.metrics import Metrics
from gateway.store.base import Claim, ClaimedDelivery, ClaimRequest, Store, StoreUnavailable
from gateway.tracing import Span, TraceContext, Tracing

__all__ = ["Dispatcher", "read_circuit", "update_circuit"]

log = structlog.get_logger("gateway.delivery")

CLAIM_BATCH = 256
# A subscriber whose transport batches gets its `max_in_flight` in this many batches at most,
# each going on with the next (`_dispatch_batch`): one on the wire while another's records and
# next claim are written, rather than the broker and the store waiting for each other in turn.
BATCHES_IN_FLIGHT = 2
# How often to look for work nobody told us about (another process's events, due retries).
POLL_SECONDS = 1.0
# Never sleep less: a delivery that is due already would have been claimed, so a due time in
# the past is a race with a commit, and that commit's notify wakes us anyway.
MIN_SLEEP_SECONDS = 0.01
# After the store fails, wait this long before asking again, doubling up to the maximum.
STORE_BACKOFF_SECONDS = 0.5
MAX_STORE_BACKOFF_SECONDS = 30.0
# After the loop crashed on something unexpected (a bug, not the store), restart it after this,
# doubling up to the maximum while it keeps crashing.
CRASH_BACKOFF_SECONDS = 0.5
MAX_CRASH_BACKOFF_SECONDS = 30.0
# Each dispatcher writes a heartbeat into the store this often; one whose heartbeat is older
# than SILENT_SECONDS is taken for dead and its leases are given back, well before they would
# run out (3 x timeout + 5 s: 35 s by default). Evidence in the store, so it holds across hosts
# and PID namespaces, where a pid proves nothing.
HEARTBEAT_SECONDS = 1.0
SILENT_SECONDS = 5.0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        subscribers: Mapping[str, SubscriberConfig],
        transports: Mapping[str, Transport],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        tracing: Tracing | None = None,
    ) -> None:
        self._store = store
        # Each attempt is a span in its event's trace (gateway/delivery/attempt_trace.py);
        # none without `tracing`.
        self._tracing = tracing or Tracing(enabled=False)
        self._subscribers = {
            name: SubscriberState(config, transports[name]) for name, config in subscribers.items()
        }
        self._metrics = metrics
        self._clock = clock
        self._owner = _new_owner()
        # Names given up after a lost claim answer (`_claim`): their leases go at `stop` too.
        # Names given up (`_take_new_name`), each with the sends under way when it was: its
        # leases are given back once those are over.
        self._retiring: dict[str, set[asyncio.Task[None]]] = {}
        # No claim issued under this name yet: renaming again would give nothing back.
        self._owner_unused = True
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._crashed = False
        self._circuits_read_at = float("-inf")
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def running(self) -> bool:
        """The dispatch loop runs (not stopped, not waiting to restart after a crash)."""
        return self._running is not None and not self._running.done() and not self._crashed

    def notify(self) -> None:
        """New deliveries were stored: look now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        """Run the dispatch loop (and the heartbeat) in the background until `stop`."""
        self._heartbeat = asyncio.create_task(self._keep_beating(), name="dispatcher-heartbeat")
        self._running = asyncio.create_task(self.run(), name="dispatcher")

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if `stop` comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)

    async def _keep_beating(self) -> None:
        """Tell the store this dispatcher lives, and give back the leases of any whose
        heartbeat went silent (killed, out of memory, or cut off), so that their deliveries go
        out now rather than when the leases run out. Nothing stops it but `stop`, which cancels
        it once the sends under way are over (beating on while they finish)."""
        while True:
            try:
                await self._store.heartbeat(self._owner)
                await self._retire_names()
                for owner in await self._store.release_leases_of_silent_owners(SILENT_SECONDS):
                    log.info("leases_released", owner=owner, silent_for=SILENT_SECONDS)
                    self._wake.set()
            except StoreUnavailable as error:
                log.warning("heartbeat_failed", error=str(error))
            except Exception as error:  # never the end of the heartbeat: logged, tried again
                log.error("heartbeat_failed", error=type(error).__name__, exc_info=True)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def run(self) -> None:
        """The dispatch loop, restarted with backoff whatever its step raises."""
        store_backoff = STORE_BACKOFF_SECONDS
        crash_backoff = CRASH_BACKOFF_SECONDS
        while not self._stopping:
            try:
                await self._step()
            except StoreUnavailable as error:
                # The disk is full or the database is down: ask again later, not in a loop.
                log.warning("claim_failed", error=str(error), retry_in=store_backoff)
                await self._pause(store_backoff)
                store_backoff = min(store_backoff * 2, MAX_STORE_BACKOFF_SECONDS)
                continue
            except Exception as error:  # a bug or a broken store: never the end of delivery
                self._crashed = True
                log.error(
                    "dispatcher_crashed",
                    error=type(error).__name__,
                    restart_in=crash_backoff,
                    exc_info=True,
                )
                await self._pause(crash_backoff)
                crash_backoff = min(crash_backoff * 2, MAX_CRASH_BACKOFF_SECONDS)
                continue
            store_backoff = STORE_BACKOFF_SECONDS
            crash_backoff = CRASH_BACKOFF_SECONDS

    async def _step(self) -> None:
        """One turn of the loop: circuits, a claim, the claimed sends started, then a sleep
        until there may be more work."""
        # Cleared before claiming: a notify from here on means work the claim may have missed.
        self._wake.clear()
        await self._refresh_circuits()
        claimed = await self._claim()
        if self._crashed:
            self._crashed = False  # it claims again: running (before the sleep, not after)
            log.info("dispatcher_restarted")
        if self._stopping:
            return
        if len(claimed) < CLAIM_BATCH:
            await self._sleep()

    async def _refresh_circuits(self) -> None:
        """Circuits and operators' pauses as the store has them: another process's probe,
        `gateway enable`, a pause or resume from the admin API. Read at most once per poll
        interval: a busy loop claims far more often than that."""
        now = self._clock()
        if now - self._circuits_read_at < POLL_SECONDS:
            return
        self._circuits_read_at = now
        stored = await self._store.subscriber_circuits()
        paused = await self._store.paused_subscribers()
        for name, subscriber in self._subscribers.items():
            version, encoded = stored.get(name, (0, None))
            subscriber.adopt_circuit(
                version, CLOSED if encoded is None else decode_circuit(encoded)
            )
            subscriber.paused = name in paused

    async def _take_probes(self, now: float) -> list[SubscriberState]:
        """Take the probe of every circuit whose pause is over, where no other process took it
        first (compare-and-set on the shared state): one probe across all processes. Those
        this process now holds."""
        taken = []
        for name, subscriber in self._subscribers.items():
            if subscriber.paused or subscriber.probe_held or subscriber.in_flight:
                continue
            async with subscriber.circuit_lock:
                # A mark no other probe ever had: only the attempt carrying it is the probe.
                mark = secrets.token_hex(8)
                reserved = take_probe(subscriber.circuit, now, subscriber.lease_seconds, mark)
                if reserved is None:
                    continue
                if await self._store.save_subscriber_circuit(
                    name, encode_circuit(reserved), expected_version=subscriber.circuit_version
                ):
                    subscriber.adopt_circuit(subscriber.circuit_version + 1, reserved)
                    subscriber.probe_held = mark
                    taken.append(subscriber)
                else:
                    self._circuits_read_at = float("-inf")  # another process's: read it
        return taken

    async def _give_back_probe(self, subscriber: SubscriberState) -> None:
        """A probe taken with nothing due to send: any process may probe again at once."""
        mark, subscriber.probe_held = subscriber.probe_held, None
        if mark is None:
            return
        now = self._clock()
        async with subscriber.circuit_lock:
            version, after = await update_circuit(
                self._store,
                subscriber.config.name,
                lambda circuit: give_back_probe(circuit, now, mark),
                (subscriber.circuit_version, subscriber.circuit),
            )
            subscriber.adopt_circuit(version, after)

    async def _claim(self) -> list[ClaimedDelivery]:
        """Claim for every subscriber with a free slot, and start sending what came back."""
        now = self._clock()
        probing = await self._take_probes(now)
        wanted = {
            name: slots
            for name, subscriber in self._subscribers.items()
            if (slots := min(subscriber.free_slots(now), CLAIM_BATCH)) > 0
        }
        # One claim per subscriber, issued together: the store commits them as one batch.
        if wanted:
            self._owner_unused = False
        ended = {name: self._subscribers[name].sends_ended for name in wanted}
        claims = await asyncio.gather(
            *(
                self._store.claim_due(self._claim_request(self._subscribers[name], slots))
                for name, slots in wanted.items()
            ),
            return_exceptions=True,
        )
        for name, claim in zip(wanted, claims, strict=True):
            if isinstance(claim, Claim) and claim.full:
                # As of `ended`: a send that ended while the claim was under way may have freed
                # a slot after the store counted, and its wake must not be lost.
                self._subscribers[name].full_as_of = ended[name]
                self._subscribers[name].full_until = now + POLL_SECONDS
        claimed = [
            delivery
            for claim in claims
            if not isinstance(claim, BaseException)
            for delivery in claim.deliveries
        ]
        if not self._stopping:  # claimed while stopping: not started; stop() gives them back
            # Started even when another subscriber's claim failed: leased, they would otherwise
            # wait for their leases to run out.
            for name, claim in zip(wanted, claims, strict=True):
                if not isinstance(claim, BaseException) and claim.deliveries:
                    self._start(self._subscribers[name], claim.deliveries)
        for subscriber in probing:
            if subscriber.in_flight == 0:
                await self._give_back_probe(subscriber)
        if any(isinstance(claim, StoreUnavailable) for claim in claims):
            self._take_new_name("a claim's answer was lost")
        for claim in claims:
            if isinstance(claim, BaseException):
                raise claim
        return claimed

    def _take_new_name(self, reason: str) -> None:
        """Leases this dispatcher holds but will not settle: a claim that failed may have
        committed all the same (the answer was lost, not the write: a database connection
        cut after the commit), and a delivery whose attempt record
        failed stays leased. It cannot tell them from the ones it is sending, so it takes a
        new name and gives back every lease of the old one as soon as the sends under way
        (which record by their lease tokens, as before) are over (`_retire_names`, at the next
        heartbeat), instead of when the leases run out (3 x timeout_seconds + 5 s)."""
        if self._owner_unused:
            return
        self._retiring[self._owner] = set(self._tasks)
        self._owner = _new_owner()
        self._owner_unused = True
        log.warning("dispatcher_renamed", reason=reason)

    async def _retire_names(self) -> None:
        """Give back the leases of each name given up whose sends are over; keep the others'
        heartbeats, so that nobody takes them for a dead dispatcher's meanwhile."""
        for name, sends in list(self._retiring.items()):
            if all(send.done() for send in sends):
                await self._store.release_leases(name)
                del self._retiring[name]
                log.info("leases_released", owner=name, reason="renamed")
                self._wake.set()
            else:
                await self._store.heartbeat(name)

    def _start(
        self, subscriber: SubscriberState, deliveries: Sequence[ClaimedDelivery]
    ) -> list[asyncio.Task[None]]:
        """Send what one claim leased: in batches for a transport that batches (each counts
        as its size in flight; a probe goes alone), else each delivery on its own."""
        subscriber.in_flight += len(deliveries)
        if subscriber.transport.batches and subscriber.probe_held is None:
            size = _batch_size(subscriber)
            sends = [
                self._dispatch_batch(subscriber, deliveries[start : start + size])
                for start in range(0, len(deliveries), size)
            ]
        else:
            sends = [self._dispatch(subscriber, delivery) for delivery in deliveries]
        tasks = []
        for send in sends:
            task = asyncio.create_task(send)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        return tasks

    async def _sleep(self) -> None:
        """Wait for new work: a notify (stored, or a send finished and freed a slot), the next
        retry coming due, or the poll interval, whichever is first.

        Only subscribers with a free slot count: deliveries due to a saturated subscriber are
        waiting for a slot, and a finished send wakes us for those. One the store found full
        is saturated too: another process's finished send wakes that process, which takes the
        slot; this one looks again at the next poll.
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

    async def _dispatch(self, subscriber: SubscriberState, delivery: ClaimedDelivery) -> None:
        """prepare -> send -> decide -> record, for one claimed delivery, inside the attempt's
        span: its context goes out with the message, and the record's log lines carry it."""
        # The probe's mark when this send is the circuit's probe: the one delivery claimed
        # while this process held it (taken only with nothing in flight, `_take_probes`).
        probe = subscriber.probe_held
        try:
            with start_attempt_span(
                self._tracing,
                subscriber.transport,
                subscriber.config.name,
                subscriber.config.kind,
                delivery,
            ) as span:
                message = self._prepare(subscriber, delivery, span.context, int(self._clock()))
                started = self._clock()
                result = await self._send(subscriber, message)
                answer = self._answer(subscriber, delivery, started, self._clock(), result)
                end_attempt_span(span, result, answer.decision)
                (applied,) = await record(self._store, subscriber, [answer], probe=probe)
                account(self._metrics, subscriber, answer, applied)
        except StoreUnavailable as error:
            # Tried again (at least once, never lost) once its lease is given back: under a new
            # name, SILENT_SECONDS from now, rather than when the lease runs out.
            log.error("record_failed", event_id=delivery.event_id, error=str(error))
            self._take_new_name(f"an attempt record failed: {error}")
        except Exception as error:  # a bug: logged; the lease runs out and it is tried again
            log.error(
                "dispatch_failed",
                event_id=delivery.event_id,
                error=type(error).__name__,
                exc_info=True,
            )
        finally:
            self._ended(subscriber, 1, probe)

    async def _dispatch_batch(
        self, subscriber: SubscriberState, deliveries: Sequence[ClaimedDelivery]
    ) -> None:
        """prepare -> send -> decide -> record for a batch to a transport that batches: each
        attempt signed and spanned as `_dispatch`'s, the messages sent together within the
        subscriber's `timeout_seconds`, the records written together, then each attempt's
        metrics and log line in its own span.

        A batch all delivered goes straight on: the subscriber's next batch is claimed in the
        same store write as its records (`_next_claim`), and its task started before this one's
        metrics and log lines are done; it runs once they are. No await may come in between:
        this batch's slots, counted free in that claim, are given back only at its end, and
        another batch's claim must not see them both taken and free. Anything else (a failure,
        which may change the circuit; a pause; `stop`; nothing more due) ends the run, and the
        dispatch loop claims as ever."""
        spans = [
            start_attempt_span(
                self._tracing,
                subscriber.transport,
                subscriber.config.name,
                subscriber.config.kind,
                delivery,
            )
            for delivery in deliveries
        ]
        open_spans = list(spans)
        try:
            # The batch's messages leave together: one `webhook-timestamp` for all of them.
            timestamp = int(self._clock())
            messages = [
                self._prepare(subscriber, delivery, span.context, timestamp)
                for delivery, span in zip(deliveries, spans, strict=True)
            ]
            started = self._clock()
            results = await self._send_batch(subscriber, messages)
            finished = self._clock()
            answers = [
                self._answer(subscriber, delivery, started, finished, result)
                for delivery, result in zip(deliveries, results, strict=True)
            ]
            for span, answer in zip(spans, answers, strict=True):
                end_attempt_span(span, answer.result, answer.decision)
            request = self._next_claim(subscriber, answers)
            if request is None:
                applied = await record(self._store, subscriber, answers, probe=None)
            else:
                applied, claim = await record_then_claim(self._store, subscriber, answers, request)
                self._go_on(subscriber, claim, request.owner)
            open_spans = []
            for span, answer, ok in zip(spans, answers, applied, strict=True):
                with span:
                    account(self._metrics, subscriber, answer, ok)
        except StoreUnavailable as error:
            # As `_dispatch`: tried again once its lease is given back under a new name (a
            # claim made with the records, its answer lost, is given back with it).
            _end_failed(open_spans, deliveries, error, "record_failed", str(error))
            open_spans = []
            self._take_new_name(f"an attempt record failed: {error}")
        except Exception as error:  # a bug: logged; the leases run out and they are tried again
            _end_failed(open_spans, deliveries, error, "dispatch_failed", type(error).__name__)
            open_spans = []
        finally:
            for span in open_spans:  # cancelled (`stop`): ended, unrecorded
                span.__exit__(None, None, None)
            self._ended(subscriber, len(deliveries), None)

    def _go_on(self, subscriber: SubscriberState, claim: Claim, owner: str) -> None:
        """Send the batch claimed with the last one's records, at once."""
        if self._stopping or not claim.deliveries:
            return  # claimed while stopping: not started; stop() gives them back
        started = self._start(subscriber, claim.deliveries)
        if owner != self._owner and owner in self._retiring:
            # Claimed under a name given up meanwhile: its leases go back once these are over.
            self._retiring[owner].update(started)

    def _next_claim(
        self, subscriber: SubscriberState, answers: Sequence[Answer]
    ) -> ClaimRequest | None:
        """The claim to make with a batch's records: the slots it frees and any free already,
        when the subscriber may have more sent now and the batch changed nothing that could
        stop it (every attempt delivered: a failure may open the circuit). None otherwise."""
        now = self._clock()
        if (
            self._stopping
            or subscriber.paused
            or subscriber.probe_held
            or may_send(subscriber.circuit, now) != "yes"
            or not all(isinstance(answer.decision, Delivered) for answer in answers)
            # A send under way when the dispatcher took a new name: the old name's leases go
            # back once it ends (`_retire_names`), so it must end.
            or any(asyncio.current_task() in sends for sends in self._retiring.values())
        ):
            return None
        slots = subscriber.config.max_in_flight - subscriber.in_flight + len(answers)
        if slots <= 0:
            # Nothing to claim; and a claim's LIMIT below 0 is none at all to SQLite.
            return None
        self._owner_unused = False
        return self._claim_request(subscriber, min(slots, _batch_size(subscriber)))

    def _claim_request(self, subscriber: SubscriberState, limit: int) -> ClaimRequest:
        """A claim of up to `limit` deliveries to `subscriber`, under this dispatcher's name."""
        return ClaimRequest(
            subscriber=subscriber.config.name,
            limit=limit,
            max_in_flight=subscriber.config.max_in_flight,
            lease_seconds=subscriber.lease_seconds,
            owner=self._owner,
        )

    def _ended(self, subscriber: SubscriberState, sends: int, probe: str | None) -> None:
        """`sends` to `subscriber` are over: their slots are free, the loop looks again."""
        subscriber.in_flight -= sends
        subscriber.sends_ended += sends
        # The probe's answer has re-opened or closed the circuit (or, unrecorded, its
        # reservation runs out): either way this process holds it no more.
        if probe is not None:
            subscriber.probe_held = None
        self._wake.set()

    def _answer(
        self,
        subscriber: SubscriberState,
        delivery: ClaimedDelivery,
        started: float,
        finished: float,
        result: SendResult,
    ) -> Answer:
        decision = decide(result, delivery.attempts + 1, subscriber.policy, finished)
        return Answer(
            delivery=delivery, started=started, finished=finished, result=result, decision=decision
        )

    async def _send_batch(
        self, subscriber: SubscriberState, messages: Sequence[OutboundMessage]
    ) -> list[SendResult]:
        """The transport's answers within the subscriber's `timeout_seconds`, as `_send`: the
        deadline is the batch's, so when it is hit no message has its answer, and each is a
        timeout; any exception is each message's failed attempt. All retried."""
        try:
            async with asyncio.timeout(subscriber.config.timeout_seconds):
                results = await subscriber.transport.send_batch(messages)
        except TimeoutError:
            return [SendResult(outcome="retry", error="timeout")] * len(messages)
        except Exception as error:
            return [unexpected_error(error)] * len(messages)
        if len(results) != len(messages):  # a transport's bug: whose answer is whose?
            return [unexpected_error(IndexError())] * len(messages)
        return results

    async def _send(self, subscriber: SubscriberState, message: OutboundMessage) -> SendResult:
        """The transport's answer within the subscriber's `timeout_seconds`, the whole attempt
        (connect, send, the answer's headers and body), whatever the transport: a deadline hit is a
        timeout, and any exception a failed attempt, both retried (docs/reference/delivery.md)."""
        try:
            async with asyncio.timeout(subscriber.config.timeout_seconds):
                return await subscriber.transport.send(message)
        except TimeoutError:
            return SendResult(outcome="retry", error="timeout")
        except Exception as error:
            return unexpected_error(error)

    def _prepare(
        self,
        subscriber: SubscriberState,
        delivery: ClaimedDelivery,
        trace: TraceContext | None,
        timestamp: int,
    ) -> OutboundMessage:
        return OutboundMessage(
            webhook_id=delivery.event_id,
            webhook_timestamp=timestamp,
            webhook_signature=subscriber.keys.sign(delivery.event_id, timestamp, delivery.body),
            body=delivery.body,
            event_type=delivery.event_type,
            source=delivery.source,
            traceparent=None if trace is None else trace.traceparent,
            tracestate=None if trace is None else trace.tracestate,
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
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        for owner in [*self._retiring, self._owner]:
            with contextlib.suppress(StoreUnavailable):
                await self._store.release_leases(owner)
        for subscriber in self._subscribers.values():
            await subscriber.transport.close()


def _new_owner() -> str:
    # Unique even among processes with one hostname and one pid (containers): an id, never
    # something to judge liveness by (the heartbeat does that).
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


def _batch_size(subscriber: SubscriberState) -> int:
    """The most deliveries one batch to `subscriber` carries (BATCHES_IN_FLIGHT)."""
    return -(-subscriber.config.max_in_flight // BATCHES_IN_FLIGHT)


def _end_failed(
    open_spans: Sequence[Span],
    deliveries: Sequence[ClaimedDelivery],
    failure: Exception,
    event: str,
    detail: str,
) -> None:
    """A batch that failed: one line per delivery, in its attempt's span while that is still
    open (then ended as failed); the traceback of a bug once, on the first line."""
    for index, delivery in enumerate(deliveries):
        fields: dict[str, object] = {"event_id": delivery.event_id, "error": detail}
        if index == 0 and not isinstance(failure, StoreUnavailable):
            fields["exc_info"] = failure
        if not open_spans:
            log.error(event, **fields)
            continue
        span = open_spans[index]
        span.fail(type(failure).__name__)
        with span:
            log.error(event, **fields)

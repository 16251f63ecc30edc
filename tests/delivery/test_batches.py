"""Delivery in batches (gateway/delivery/transport.py `send_batch`): a subscriber whose transport
batches gets its claimed deliveries sent together, and each one is still an attempt of its own,
with its own outcome, record, fencing token, metrics and log line; a batch past its deadline is a
timeout for every message, and a transport that raises is a retry for every message, never an
escaped exception. The store side: a batch's records in one write, each fenced by its own token,
and the next batch claimed in the same write.

The transports here are the tests' own (tests/queues/test_batches.py drives the real brokers'):
what they do wrong is the point."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.config import SubscriberConfig
from gateway.delivery.decide import Decision, Delivered, RetryAt
from gateway.delivery.transport import OutboundMessage, SendResult, Transport
from gateway.store.base import AttemptRecord, ClaimedDelivery, ClaimRequest, NewEvent
from gateway.store.sqlite import SQLiteStore
from tests.delivery.batching import (
    all_attempted,
    attempts_of,
    dispatch_until,
    new_event,
    open_store,
    subscribers_of,
)
from tests.store.support import Clock, attempt_of, claim, event

SINK = """
[subscribers.sink]
kind = "redis"
url = "redis://127.0.0.1:1"
stream = "never-used"
max_in_flight = 8
timeout_seconds = {timeout}
retry_schedule = [60]
"""


class BatchingTransport(Transport):
    """Answers every message `delivered`, after `delay`; keeps every batch it was handed."""

    batches = True

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sent: list[list[OutboundMessage]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, message: OutboundMessage) -> SendResult:
        (result,) = await self.send_batch([message])
        return result

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        self.sent.append(list(messages))
        self.in_flight += len(messages)
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= len(messages)
        return [SendResult(outcome="delivered")] * len(messages)


class RaisingTransport(BatchingTransport):
    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        self.sent.append(list(messages))
        raise RuntimeError("the broker's client has a bug")


def test_a_transport_raising_in_send_batch_makes_every_message_a_recorded_retry(
    tmp_path: Path,
) -> None:
    subscribers = subscribers_of(tmp_path, SINK.format(timeout=5))
    events = [new_event(n, "sink") for n in range(5)]
    transport = RaisingTransport()

    async def scenario() -> None:
        store = await open_store(tmp_path, events)
        ids = [event.id for event in events]
        try:
            await dispatch_until(
                store, subscribers, all_attempted(store, ids), transports={"sink": transport}
            )
            for event_id in ids:
                (attempt,) = await attempts_of(store, event_id)
                assert (attempt.outcome, attempt.error) == (
                    "retry",
                    "unexpected error: RuntimeError",
                )
        finally:
            await store.close()

    asyncio.run(scenario())
    assert [len(batch) for batch in transport.sent] == [4, 1]  # max_in_flight 8: batches of 4


def test_a_batch_past_its_deadline_is_a_timeout_for_every_message(tmp_path: Path) -> None:
    subscribers = subscribers_of(tmp_path, SINK.format(timeout=0.3))
    events = [new_event(n, "sink") for n in range(3)]
    transport = BatchingTransport(delay=5.0)

    async def scenario() -> None:
        store = await open_store(tmp_path, events)
        ids = [event.id for event in events]
        try:
            await dispatch_until(
                store, subscribers, all_attempted(store, ids), transports={"sink": transport}
            )
            for event_id in ids:
                (attempt,) = await attempts_of(store, event_id)
                assert (attempt.outcome, attempt.error) == ("retry", "timeout")
                assert attempt.duration < 2.0
        finally:
            await store.close()

    asyncio.run(scenario())
    assert [len(batch) for batch in transport.sent] == [3]


def test_batches_count_their_size_in_flight_and_go_on_until_the_backlog_is_sent(
    tmp_path: Path,
) -> None:
    """40 due at once to a subscriber with max_in_flight 8: never more than 8 messages under
    way, each batch at most 4 (two in flight: one on the wire while another is recorded),
    every event sent once and recorded delivered with one attempt."""
    subscribers = subscribers_of(tmp_path, SINK.format(timeout=5))
    events = [new_event(n, "sink") for n in range(40)]
    transport = BatchingTransport(delay=0.01)

    async def scenario() -> None:
        store = await open_store(tmp_path, events)
        ids = [event.id for event in events]
        try:
            metrics = await dispatch_until(
                store, subscribers, all_attempted(store, ids), transports={"sink": transport}
            )
            for event_id in ids:
                (attempt,) = await attempts_of(store, event_id)
                assert attempt.outcome == "delivered"
            delivered = metrics.registry.get_sample_value(
                "finrelay_delivery_attempts_total", {"subscriber": "sink", "outcome": "delivered"}
            )
            assert delivered == 40
        finally:
            await store.close()

    asyncio.run(scenario())
    sent = [message.webhook_id for batch in transport.sent for message in batch]
    assert sorted(sent) == sorted(event.id for event in events)
    assert max(len(batch) for batch in transport.sent) == 4
    assert transport.most_in_flight <= 8


def send_all(
    tmp_path: Path,
    subscribers: Mapping[str, SubscriberConfig],
    events: Sequence[NewEvent],
    transport: Transport,
) -> None:
    """Store `events`, then run a dispatcher sending to "sink" through `transport` until each
    has an attempt on record."""

    async def scenario() -> None:
        store = await open_store(tmp_path, events)
        try:
            await dispatch_until(
                store,
                subscribers,
                all_attempted(store, [event.id for event in events]),
                transports={"sink": transport},
            )
        finally:
            await store.close()

    asyncio.run(scenario())


class UnevenTransport(BatchingTransport):
    """As BatchingTransport, but its batches take 0, 2 or 4 ms in turn: they end, and are
    recorded, in another order than they left."""

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        self.delay = 0.002 * (len(self.sent) % 3)
        return await super().send_batch(messages)


def test_batches_going_on_from_each_other_never_exceed_max_in_flight(tmp_path: Path) -> None:
    """max_in_flight 7: batches of 4 and 3, each going on with the next claimed with its
    records, ending in any order. However they interleave, never more than 7 messages under way
    nor a batch of more than 4, and every event sent once."""
    subscribers = subscribers_of(
        tmp_path, SINK.format(timeout=5).replace("max_in_flight = 8", "max_in_flight = 7")
    )
    events = [new_event(n, "sink") for n in range(120)]
    transport = UnevenTransport()

    send_all(tmp_path, subscribers, events, transport)
    sent = [message.webhook_id for batch in transport.sent for message in batch]
    assert sorted(sent) == sorted(event.id for event in events)
    assert max(len(batch) for batch in transport.sent) <= 4
    assert transport.most_in_flight <= 7


def test_an_ordered_subscriber_s_batch_holds_one_delivery_per_key_and_keeps_their_order(
    tmp_path: Path,
) -> None:
    """Three subjects, five events each, to an ordered subscriber: a batch never carries two
    deliveries of one subject, and each subject's events go out in the order they came."""
    subscribers = subscribers_of(tmp_path, SINK.format(timeout=5) + 'ordering = "subject"\n')
    events = [new_event(n, "sink", subject=f"cus_{n % 3}", ordered=("sink",)) for n in range(15)]
    transport = BatchingTransport()

    send_all(tmp_path, subscribers, events, transport)
    subject_of = {event.id: event.subject for event in events}
    for batch in transport.sent:
        subjects = [subject_of[message.webhook_id] for message in batch]
        assert len(subjects) == len(set(subjects)), subjects
    sent = [message.webhook_id for batch in transport.sent for message in batch]
    for key in ("cus_0", "cus_1", "cus_2"):
        in_order = [event.id for event in events if event.subject == key]
        assert [event_id for event_id in sent if subject_of[event_id] == key] == in_order


# The store: a batch's records, each under its own lease token, and the next claim with them.


def test_a_batch_of_records_applies_each_under_its_own_token_and_skips_the_stale_ones(
    tmp_path: Path,
) -> None:
    """w1's leases ran out and w2 claimed the deliveries again: w1's batch changes nothing; a
    batch mixing a stale token with fresh ones applies the fresh ones only, each as decided."""
    clock = Clock()

    def records(
        claimed: Sequence[ClaimedDelivery], decisions: Sequence[Decision]
    ) -> list[AttemptRecord]:
        return [
            AttemptRecord(attempt_of(decision, d, clock.now), decision, d.lease_token)
            for d, decision in zip(claimed, decisions, strict=True)
        ]

    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "gateway.db", clock=clock)
        await store.open()
        try:
            for n in (1, 2, 3):
                await store.accept(event(n))
            old = await claim(store, "w1", limit=3)
            clock.now += 31  # w1's leases ran out
            new = await claim(store, "w2", limit=3)
            assert [d.delivery_id for d in new] == [d.delivery_id for d in old]
            assert await store.record_attempts(records(old, [Delivered()] * 3)) == [False] * 3
            retry = RetryAt(at=clock.now + 60)
            mixed = records([old[0], *new], [Delivered(), Delivered(), retry, Delivered()])
            assert await store.record_attempts(mixed) == [False, True, True, True]
            for claimed, outcome in zip(new, ("delivered", "retry", "delivered"), strict=True):
                (attempt,) = await attempts_of(store, claimed.event_id)
                assert attempt.outcome == outcome
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_next_claim_goes_with_the_records_and_finds_their_slots_and_successors_free(
    tmp_path: Path,
) -> None:
    """max_in_flight 2, both slots leased: recording both and claiming in one write gets the
    next two, among them the successor (held until then) of an ordered delivery recorded."""
    clock = Clock()

    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "gateway.db", clock=clock)
        await store.open()
        try:
            await store.accept(event(1, subject="k", ordered=("a",)))
            await store.accept(event(2))
            await store.accept(event(3, subject="k", ordered=("a",)))  # held behind 1
            request = ClaimRequest(
                subscriber="a", limit=2, max_in_flight=2, lease_seconds=30, owner="w"
            )
            leased = await store.claim_due(request)
            assert leased.full
            assert [d.event_id for d in leased.deliveries] == [event(1).id, event(2).id]
            records = [
                AttemptRecord(attempt_of(Delivered(), d, clock.now), Delivered(), d.lease_token)
                for d in leased.deliveries
            ]
            applied, following = await store.record_attempts_then_claim(records, request)
            assert applied == [True, True]
            assert [d.event_id for d in following.deliveries] == [event(3).id]
        finally:
            await store.close()

    asyncio.run(scenario())

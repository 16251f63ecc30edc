"""A dead letter's `attempts`, on every backend, is every attempt recorded for its delivery: a
redrive gives the delivery a fresh schedule, but the attempts before it stay in its history,
and the dead-letter list counts what the event's record lists."""

from __future__ import annotations

from gateway.delivery.decide import Dead, RetryAt
from tests.store.conftest import OpenStore, Run
from tests.store.support import START, Clock, claim, event, event_id, settle


def test_a_redriven_dead_letter_counts_every_attempt_recorded(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 10)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1, ("a", "b")))
        # a: one retry, then dead (2 attempts); b: dead at once (1 attempt).
        (first,) = await claim(store, subscriber="a")
        await settle(store, first, RetryAt(at=clock.now), START + 1)
        (second,) = await claim(store, subscriber="a")
        await settle(store, second, Dead(), START + 2)
        (only,) = await claim(store, subscriber="b")
        await settle(store, only, Dead(), START + 2)

        # a is redriven, and dies again after one more attempt.
        clock.now = START + 20
        assert await store.redrive(now=clock.now, subscriber="a") == 1
        (third,) = await claim(store, subscriber="a")
        assert third.attempts == 0  # a fresh schedule
        await settle(store, third, Dead(), START + 20)

        letters = await store.dead_letter_page(subscriber=None, after=None, limit=10)
        record = await store.event_record(event_id(1))
        assert record is not None
        recorded = {delivery.subscriber: len(delivery.attempts) for delivery in record.deliveries}
        assert recorded == {"a": 3, "b": 1}
        assert {letter.subscriber: letter.attempts for letter in letters} == recorded

    run(scenario())

"""Sending again, on every backend: `redrive` makes dead deliveries pending, due now, with a
fresh schedule (bounded by subscriber and by when they died); `replay` sends a stored event
again to any subscriber (None for an event the store does not have). Both are seen by another
store on the database, as a CLI's change is by running nodes. (Where an ordered one goes:
tests/store/test_ordering.py.)"""

from __future__ import annotations

from gateway.delivery.decide import Dead, Delivered
from gateway.store.base import Store
from tests.store.conftest import OpenStore, Run
from tests.store.support import START, Clock, claim, delivery_state, event, event_id, settle


async def die(store: Store, subscriber: str, at: float) -> None:
    """Every due delivery to `subscriber` dies, of an attempt ending at `at`."""
    for claimed in await claim(store, subscriber=subscriber):
        await settle(store, claimed, Dead(), at - 0.1)


def test_redrive_makes_dead_deliveries_due_now_with_a_fresh_schedule(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 10)

    async def scenario() -> None:
        cli = await open_test_store(clock)
        node = await open_test_store(clock)
        await cli.accept(event(1, ("a", "b")))
        await die(node, "a", START + 10)
        await die(node, "b", START + 10)
        clock.now = START + 50
        assert await cli.redrive(now=clock.now) == 2
        assert await cli.dead_counts() == {}
        assert await cli.redrive(now=clock.now) == 0  # nothing dead any more
        # The node claims them at once, as first attempts.
        for subscriber in ("a", "b"):
            (again,) = await claim(node, subscriber=subscriber)
            assert (again.attempts, again.due_at) == (0, START + 50)
            await settle(node, again, Delivered())
            assert (await delivery_state(node, 1, subscriber))[:2] == ("delivered", 2)

    run(scenario())


def test_redrive_keeps_to_its_subscriber_and_its_window(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1000)

    async def scenario() -> None:
        store = await open_test_store(clock)
        for n in range(3):
            await store.accept(event(n, ("a", "b")))
            await die(store, "a", START + 100 * (n + 1))  # a's die at 100, 200, 300
        await die(store, "b", START + 200)
        now = clock.now
        assert await store.redrive(now=now, subscriber="b", since=START + 250) == 0
        assert (
            await store.redrive(now=now, subscriber="a", since=START + 150, until=START + 250) == 1
        )
        assert (await delivery_state(store, 1, "a"))[0] == "pending"
        assert await store.dead_counts() == {"a": 2, "b": 3}
        assert await store.redrive(now=now, until=START + 150) == 1  # a's first
        assert (await delivery_state(store, 0, "a"))[0] == "pending"
        assert await store.redrive(now=now, subscriber="b") == 3
        assert await store.dead_counts() == {"a": 1}
        assert (await delivery_state(store, 2, "a"))[0] == "dead"
        assert await store.redrive(now=now, subscriber="nobody") == 0

    run(scenario())


def test_replay_sends_a_stored_event_again_to_any_subscriber(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 10)

    async def scenario() -> None:
        store = await open_test_store(clock)
        assert await store.replay("evt_unknown", ["a"], now=clock.now) is None
        await store.accept(event(1, ("a",)))
        (first,) = await claim(store)
        await settle(store, first, Delivered())
        clock.now = START + 20
        # Again to `a`, which had it, and to `z`, which no route selected.
        assert await store.replay(event_id(1), ["a", "z"], now=clock.now) == 2
        assert sorted(await store.event_subscribers(event_id(1))) == ["a", "z"]
        (again,) = await claim(store)
        assert again.delivery_id == first.delivery_id
        assert (again.attempts, again.due_at) == (0, START + 20)
        (new,) = await claim(store, subscriber="z")
        assert (new.event_id, new.body, new.attempts) == (event_id(1), event(1).body, 0)
        # An empty replay changes nothing.
        assert await store.replay(event_id(1), [], now=clock.now) == 0

    run(scenario())

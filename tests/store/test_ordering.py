"""Ordered delivery per subject (docs/reference/ordering.md) in the store, on every backend: which
deliveries are held, what releases them, where a redriven or replayed one goes, and that the
rule holds across two stores on one database. (That SQLite's claim and release search indexes
is SQLite's own: tests/store/test_sqlite_specific.py.)"""

from __future__ import annotations

import asyncio

from gateway.delivery.decide import Dead, Delivered, RetryAt
from gateway.store.base import ClaimedDelivery, NewEvent, Store
from tests.store import support
from tests.store.conftest import OpenStore, Run
from tests.store.support import START, Clock, settle


def event(
    n: int,
    subject: str | None,
    *,
    source: str = "s",
    subscribers: tuple[str, ...] = ("a", "b"),
    ordered: tuple[str, ...] = ("a",),
) -> NewEvent:
    return support.event(n, subscribers, source=source, subject=subject, ordered=ordered)


async def claim(store: Store, subscriber: str = "a") -> dict[str, ClaimedDelivery]:
    """What a worker claims now, by event number."""
    claimed = await support.claim(store, subscriber=subscriber)
    return {str(support.number(delivery)): delivery for delivery in claimed}


def test_only_the_first_pending_delivery_of_a_subject_is_claimable(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        # Accepted together: one group commit, in this order.
        await asyncio.gather(
            *(
                store.accept(e)
                for e in (
                    event(1, "pay_1"),
                    event(2, "pay_1"),
                    event(3, "pay_2"),
                    event(4, None),  # no subject: never held
                    event(5, None),
                    event(6, "pay_1", source="t"),  # another source's pay_1
                    event(7, "pay_1", ordered=()),  # to nobody ordered
                )
            )
        )
        await store.accept(event(8, "pay_1"))  # a later commit
        assert sorted(await claim(store)) == ["1", "3", "4", "5", "6", "7"]
        # The unordered subscriber gets everything at once.
        assert sorted(await claim(store, "b")) == [str(n) for n in range(1, 9)]
        backlog = await store.delivery_backlog()
        assert (backlog["a"].count, backlog["a"].held) == (8, 2)
        assert (backlog["b"].count, backlog["b"].held) == (8, 0)
        assert (await store.stats())["held"] == 2
        assert (await support.delivery_state(store, 8))[0] == "held"
        # Held ones are not due: nothing to wake up for.
        assert await store.next_due_at(subscribers=["a"]) is None

    run(scenario())


def test_delivered_or_dead_releases_the_next_at_once_and_a_retry_holds_it(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        for n in (1, 2, 3):
            await store.accept(event(n, "pay_1"))
        first = (await claim(store))["1"]
        clock.now += 1
        await settle(store, first, RetryAt(at=clock.now + 60))
        clock.now += 61  # the retry is due; its successors still wait
        first = (await claim(store))["1"]
        await settle(store, first, Delivered())
        released = await claim(store)
        assert list(released) == ["2"]
        assert released["2"].due_at == clock.now  # due when released, not when stored
        clock.now += 1
        await settle(store, released["2"], Dead())  # a dead letter releases the next
        assert list(await claim(store)) == ["3"]
        assert (await store.delivery_backlog())["a"].held == 0

    run(scenario())


def test_a_redriven_dead_letter_keeps_its_place_ahead_of_later_held_ones(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        for n in (1, 2, 3):
            await store.accept(event(n, "pay_1"))
        await settle(store, (await claim(store))["1"], Dead())
        second = (await claim(store))["2"]  # released by the dead letter, in flight
        assert await store.redrive(now=clock.now, subscriber="a") == 1
        assert await claim(store) == {}  # 1 waits behind 2, which is under way
        await settle(store, second, Delivered())
        first = await claim(store)
        assert list(first) == ["1"]  # before 3: commit order
        await settle(store, first["1"], Delivered())
        assert list(await claim(store)) == ["3"]

    run(scenario())


def test_several_dead_letters_of_a_subject_are_redriven_one_at_a_time(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        for n in (1, 2):
            await store.accept(event(n, "pay_1"))
        await settle(store, (await claim(store))["1"], Dead())
        await settle(store, (await claim(store))["2"], Dead())
        assert await store.redrive(now=clock.now) == 2
        first = await claim(store)
        assert list(first) == ["1"]
        await settle(store, first["1"], Delivered())
        assert list(await claim(store)) == ["2"]

    run(scenario())


def test_a_replay_keeps_its_event_s_place_and_a_new_delivery_joins_the_back(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        for n in (1, 2, 3):
            await store.accept(event(n, "pay_1", subscribers=("a",)))
        await settle(store, (await claim(store))["1"], Delivered())
        second = (await claim(store))["2"]
        # Event 1 again to `a`, which delivered it: held behind 2 (under way), and before
        # 3, as it was committed before 3.
        assert await store.replay(event(1, None).id, ["a"], now=clock.now, ordered=["a"])
        assert await claim(store) == {}
        await settle(store, second, Delivered())
        replayed = await claim(store)
        assert list(replayed) == ["1"]
        await settle(store, replayed["1"], Delivered())
        assert list(await claim(store)) == ["3"]

        # A delivery the event never had is a new one: behind every delivery of its
        # subject stored before, though the event itself was committed before them.
        await store.accept(event(6, "pay_2", subscribers=("b",), ordered=()))
        for n in (7, 8):
            await store.accept(event(n, "pay_2", subscribers=("c",), ordered=("c",)))
        assert await store.replay(event(6, None).id, ["c"], now=clock.now, ordered=["c"])
        order = []
        for _ in range(5):
            claimed = await claim(store, "c")
            assert len(claimed) <= 1
            for number, delivery in claimed.items():
                order.append(number)
                await settle(store, delivery, Delivered())
        assert order == ["7", "8", "6"]

    run(scenario())


def test_the_rule_holds_across_two_stores_on_one_database(
    open_test_store: OpenStore, run: Run
) -> None:
    """Two gateway processes (here two stores, each with its own writer) share the database:
    what one stores is held behind what the other stored, and a release by one is claimable by
    the other at once."""
    clock = Clock(START + 1)

    async def scenario() -> None:
        first = await open_test_store(clock)
        second = await open_test_store(clock)
        await first.accept(event(1, "pay_1"))
        await second.accept(event(2, "pay_1"))
        await first.accept(event(3, "pay_1"))
        assert list(await claim(second)) == ["1"]
        assert await claim(first) == {}
        # The first delivery's lease ran out (its worker died): the other store claims it
        # again, records it delivered, and the next is claimable from either store.
        clock.now += 31
        (retaken,) = (await claim(first)).values()
        await settle(first, retaken, Delivered())
        assert list(await claim(second)) == ["2"]

    run(scenario())

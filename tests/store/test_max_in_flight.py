"""`max_in_flight` in the store's claim, on every backend: a subscriber's live leases (pending
deliveries whose lease has not run out) are its sends under way, whoever holds them, and no claim
leases past the bound, so every process and node together stay within it (docs/reference/nodes.md).
A lease that runs out, is given back, or whose attempt is recorded frees its slot; each subscriber
has a bound of its own. `Claim.full` says a claim left no slot free."""

from __future__ import annotations

import asyncio

from gateway.delivery.decide import Delivered, RetryAt
from gateway.store.base import Claim, ClaimRequest, Store
from tests.store.conftest import OpenStore, Run
from tests.store.support import START, Clock, event, number, settle

BOUND = 4
LEASE = 30.0


async def claim(
    store: Store, owner: str, *, limit: int = 100, subscriber: str = "a", bound: int = BOUND
) -> Claim:
    return await store.claim_due(
        ClaimRequest(
            subscriber=subscriber,
            limit=limit,
            max_in_flight=bound,
            lease_seconds=LEASE,
            owner=owner,
        )
    )


def test_two_stores_claiming_at_once_never_lease_past_max_in_flight_together(
    open_test_store: OpenStore, run: Run
) -> None:
    """Two processes (or nodes) on one database, each claiming for one subscriber under several
    names at the same moment: together they hold the bound, not a bound each."""
    clock = Clock(START + 1)

    async def scenario() -> None:
        first = await open_test_store(clock)
        second = await open_test_store(clock)
        await asyncio.gather(*(first.accept(event(n)) for n in range(40)))
        claims = await asyncio.gather(
            *(claim(store, f"w{i}", limit=3) for i in range(4) for store in (first, second))
        )
        taken = [delivery.delivery_id for each in claims for delivery in each.deliveries]
        assert len(taken) == len(set(taken)) == BOUND
        # Whichever claim took the last slot says so, and so does every one after it.
        assert any(each.full for each in claims)
        for store in (first, second):
            assert await claim(store, "late") == Claim(deliveries=(), full=True)

    run(scenario())


def test_a_claim_takes_only_the_free_slots_and_says_when_none_is_left(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        first = await open_test_store(clock)
        second = await open_test_store(clock)
        for n in range(10):
            await first.accept(event(n))
        one = await claim(first, "w1", limit=3)
        assert (len(one.deliveries), one.full) == (3, False)
        other = await claim(second, "w2", limit=3)
        assert [number(d) for d in other.deliveries] == [3]
        assert other.full

    run(scenario())


def test_a_subscriber_with_free_slots_and_nothing_due_is_not_full(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1))
        assert len((await claim(store, "w")).deliveries) == 1
        assert await claim(store, "w") == Claim(deliveries=(), full=False)

    run(scenario())


def test_a_lease_that_runs_out_or_is_given_back_frees_its_slot(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        for n in range(10):
            await store.accept(event(n))
        crashed = await claim(store, "crashed", limit=2)
        clock.now += 10
        assert len((await claim(store, "alive", limit=2)).deliveries) == 2
        # Up to the instant it runs out a lease is live: its delivery is not claimable, and
        # its slot not free.
        clock.now += LEASE - 10
        assert await claim(store, "other") == Claim(deliveries=(), full=True)
        # The crashed worker's leases ran out: their slots are free (and their deliveries,
        # due first, claimable again); the living worker's are not.
        clock.now += 0.001
        again = await claim(store, "other")
        assert [d.delivery_id for d in again.deliveries] == [
            d.delivery_id for d in crashed.deliveries
        ]
        assert again.full
        # A clean stop gives its leases back: their slots are free at once.
        await store.release_leases("other")
        back = await claim(store, "next")
        assert (len(back.deliveries), back.full) == (2, True)

    run(scenario())


def test_a_recorded_attempt_frees_its_slot(open_test_store: OpenStore, run: Run) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        for n in range(10):
            await store.accept(event(n))
        first, second, *_ = (await claim(store, "w", bound=2)).deliveries
        assert await claim(store, "w", bound=2) == Claim(deliveries=(), full=True)
        await settle(store, first, Delivered())
        (third,) = (await claim(store, "w", bound=2)).deliveries
        # A retry scheduled for later frees the slot too: its delivery is not due meanwhile.
        await settle(store, second, RetryAt(at=clock.now + 60))
        fourth = await claim(store, "w", bound=2)
        assert [number(d) for d in (third, *fourth.deliveries)] == [2, 3]
        assert fourth.full

    run(scenario())


def test_each_subscriber_has_a_bound_of_its_own(open_test_store: OpenStore, run: Run) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        for n in range(10):
            await store.accept(event(n, ("a", "b")))
        to_a = await claim(store, "w", subscriber="a")
        to_b = await claim(store, "w", subscriber="b")
        assert (len(to_a.deliveries), to_a.full) == (BOUND, True)
        assert (len(to_b.deliveries), to_b.full) == (BOUND, True)

    run(scenario())


def test_a_claim_asked_for_fewer_than_none_leases_nothing(
    open_test_store: OpenStore, run: Run
) -> None:
    """A caller's miscount (free slots counted twice) must not turn into no limit: SQLite reads
    a negative LIMIT as none, and PostgreSQL refuses one."""
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await asyncio.gather(*(store.accept(event(n)) for n in range(10)))
        assert (await claim(store, "w", limit=-3, bound=100)).deliveries == ()
        assert len((await claim(store, "w", limit=5, bound=100)).deliveries) == 5

    run(scenario())

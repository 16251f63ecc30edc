"""The store's delivery side, on every backend: claims (due only, oldest first, a limit, leases
judged by the store's clock, a new token each), fencing tokens, heartbeats, attempts recorded as
decided, `next_due_at`, and two stores on one database claiming and recording at once."""

from __future__ import annotations

import asyncio

import pytest

from gateway.delivery.decide import Dead, Decision, Delivered, RetryAt
from gateway.store.base import Attempt, ClaimedDelivery
from tests.store.conftest import OpenStore, Run
from tests.store.support import (
    START,
    Clock,
    attempt_of,
    attempts_on_record,
    claim,
    delivery_state,
    event,
    number,
    settle,
)


def late_attempt(claimed: ClaimedDelivery, at: float) -> Attempt:
    """A "delivered" attempt: from a stale worker, it would end the delivery early."""
    return attempt_of(Delivered(), claimed, at)


# Claims: due only, oldest due first, at most `limit`, by the store's clock.


def test_a_lease_keeps_a_delivery_from_a_second_worker_until_it_runs_out(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock()

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1))
        clock.now += 1
        (first,) = await claim(store, "w1")
        assert await claim(store, "w2") == []
        assert (first.due_at, first.attempts) == (START, 0)
        clock.now += 31  # the first worker died: its lease ran out
        (later,) = await claim(store, "w2")
        assert later.delivery_id == first.delivery_id
        assert later.lease_token != first.lease_token

    run(scenario())


def test_nothing_is_claimed_before_it_is_due_by_the_store_s_clock(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START - 10)  # the store's clock is behind the event's time

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1))
        assert await claim(store) == []
        clock.now = START
        assert len(await claim(store)) == 1

    run(scenario())


def test_claims_take_the_oldest_due_first_up_to_the_limit_each_under_a_new_token(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 100)

    async def scenario() -> None:
        store = await open_test_store(clock)
        # Received (and so due) out of their numbering; one of them not due yet.
        for n, at in ((1, START + 30), (2, START + 10), (3, START + 20), (4, START + 500)):
            await store.accept(event(n, at=at))
        claimed = await claim(store, limit=2)
        assert [number(c) for c in claimed] == [2, 3]
        assert [c.due_at for c in claimed] == [START + 10, START + 20]
        (third,) = await claim(store, limit=2)  # event 4 is not due
        assert number(third) == 1
        # What a claim hands over is the delivery as stored.
        assert (third.event_id, third.subscriber, third.attempts) == (event(1).id, "a", 0)
        assert (third.body, third.source, third.event_type) == (
            event(1).body,
            "s",
            "payment.succeeded",
        )
        assert third.created_at == pytest.approx(START + 30, abs=1)
        tokens = {c.lease_token for c in claimed} | {third.lease_token}
        clock.now += 1000  # every lease ran out, event 4 is due
        again = await claim(store, limit=10)
        assert [number(c) for c in again] == [2, 3, 1, 4]
        assert tokens.isdisjoint(c.lease_token for c in again if number(c) != 4)

    run(scenario())


def test_each_subscriber_of_an_event_has_its_own_delivery(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        assert await store.accept(event(1, ("a", "b", "c"))) == "accepted"
        assert sorted(await store.event_subscribers(event(1).id)) == ["a", "b", "c"]
        assert await store.event_subscribers("evt_unknown") == []
        (to_a,) = await claim(store, subscriber="a")
        (to_b,) = await claim(store, subscriber="b")
        assert to_a.delivery_id != to_b.delivery_id
        assert await claim(store, subscriber="d") == []
        await settle(store, to_a, Delivered())
        # Each moves on its own: b is still leased, c still pending.
        assert (await delivery_state(store, 1, "a"))[0] == "delivered"
        assert (await delivery_state(store, 1, "b"))[0] == "pending"
        assert len(await claim(store, subscriber="c")) == 1
        assert await claim(store, subscriber="a") == []

    run(scenario())


def test_released_leases_are_due_at_once(open_test_store: OpenStore, run: Run) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1))
        await store.accept(event(2))
        assert len(await claim(store, "w1", limit=1)) == 1
        assert len(await claim(store, "w2", limit=1)) == 1
        await store.release_leases("w1")
        (back,) = await claim(store, "w3")  # w1's only: w2 keeps its own
        assert number(back) == 1

    run(scenario())


def test_two_stores_claiming_at_once_never_hand_out_one_delivery_twice(
    open_test_store: OpenStore, run: Run
) -> None:
    """Two nodes' dispatchers, claiming from one database at the same moment."""
    clock = Clock(START + 1)

    async def scenario() -> None:
        first = await open_test_store(clock)
        second = await open_test_store(clock)
        await asyncio.gather(*(first.accept(event(n)) for n in range(60)))
        claims = await asyncio.gather(
            *(claim(store, f"w{i}", limit=7) for i in range(6) for store in (first, second))
        )
        taken = [c.delivery_id for batch in claims for c in batch]
        assert len(taken) == len(set(taken)) == 60

    run(scenario())


# Fencing: an attempt is recorded only under the lease token that holds the delivery.


def test_attempts_move_a_delivery_through_its_states_as_decided(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1, ("a", "b")))
        (claimed,) = await claim(store)
        retry_at = START + 100
        await settle(store, claimed, RetryAt(at=retry_at), START + 1)
        assert await delivery_state(store, 1) == ("pending", 1, retry_at)
        assert await store.next_due_at(subscribers=["a"]) == pytest.approx(retry_at)
        assert await claim(store) == []
        clock.now = retry_at
        (again,) = await claim(store)
        assert (again.attempts, again.due_at) == (1, retry_at)
        await settle(store, again, Dead(), retry_at)
        assert (await delivery_state(store, 1))[:2] == ("dead", 2)
        (dead,) = await store.dead_letter_page(subscriber=None, after=None, limit=10)
        assert (dead.event_id, dead.subscriber, dead.attempts, dead.last_error) == (
            claimed.event_id,
            "a",
            2,
            "HTTP 503",
        )
        assert dead.dead_at == pytest.approx(retry_at)
        # Delivered: the other subscriber's, at its first attempt, with what was recorded.
        (to_b,) = await claim(store, subscriber="b")
        await settle(store, to_b, Delivered(), retry_at)
        assert (await delivery_state(store, 1, "b"))[:2] == ("delivered", 1)
        record = await store.event_record(event(1).id)
        assert record is not None
        attempts = {d.subscriber: d.attempts for d in record.deliveries}
        assert [a.outcome for a in attempts["a"]] == ["retry", "failed"]
        assert attempts["b"] == (attempt_of(Delivered(), to_b, retry_at),)

    run(scenario())


def test_a_stale_worker_s_record_after_its_lease_was_taken_over_changes_nothing(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1))
        (old,) = await claim(store, "slow", lease=5)
        clock.now += 6  # its lease ran out while it was (supposedly) still sending
        (new,) = await claim(store, "fresh", lease=5)
        before = await delivery_state(store, 1)

        # The slow worker's late answer: a "delivered" would end the delivery early.
        stale = await store.record_attempt(
            late_attempt(old, START + 1), Delivered(), lease_token=old.lease_token
        )
        assert stale is False
        assert await delivery_state(store, 1) == before == ("pending", 0, START)

        # The holder of the lease records; a second record under the same lease does not.
        fresh = await store.record_attempt(
            attempt_of(RetryAt(at=clock.now + 60), new, clock.now),
            RetryAt(at=clock.now + 60),
            lease_token=new.lease_token,
        )
        assert fresh is True
        assert await delivery_state(store, 1) == ("pending", 1, clock.now + 60)
        again = await store.record_attempt(
            late_attempt(new, clock.now), Delivered(), lease_token=new.lease_token
        )
        assert again is False
        assert await delivery_state(store, 1) == ("pending", 1, clock.now + 60)

    run(scenario())


def test_a_send_under_way_when_its_delivery_is_replayed_does_not_record(
    open_test_store: OpenStore, run: Run
) -> None:
    # `gateway replay` of a pending delivery starts a fresh count: the attempt that was already
    # out must not become attempt 1 of it (nor end it as delivered). Replay gives the lease back,
    # and the next claim hands out a new token, so the late record is stale.
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1))
        (sending,) = await claim(store, "worker")
        assert await store.replay(sending.event_id, ["a"], now=clock.now) == 1
        late = await store.record_attempt(
            late_attempt(sending, clock.now), Delivered(), lease_token=sending.lease_token
        )
        assert late is False
        assert await delivery_state(store, 1) == ("pending", 0, clock.now)
        (replayed,) = await claim(store, "worker")
        assert replayed.lease_token != sending.lease_token

    run(scenario())


def test_records_sent_together_apply_each_by_its_own_token(
    open_test_store: OpenStore, run: Run
) -> None:
    """Records waiting together may go out in one set-based batch; each applies or not by
    itself."""
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        for n in range(6):
            await store.accept(event(n))
        old = await claim(store, "old", lease=5, limit=10)
        clock.now += 6
        new = await claim(store, "new", lease=5, limit=10)
        assert [d.delivery_id for d in old] == [d.delivery_id for d in new]
        decision: Decision = Delivered()
        # Even deliveries: the new holder records. Odd: the stale one does.
        records = [
            store.record_attempt(late_attempt(d, clock.now), decision, lease_token=d.lease_token)
            for d in (new[n] if n % 2 == 0 else old[n] for n in range(6))
        ]
        assert list(await asyncio.gather(*records)) == [True, False] * 3
        states = [(await delivery_state(store, n))[0] for n in range(6)]
        assert states == ["delivered", "pending"] * 3
        assert await attempts_on_record(store, range(6)) == 3

    run(scenario())


def test_a_record_after_the_delivery_ended_changes_nothing(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1))
        (claimed,) = await claim(store)
        await settle(store, claimed, Dead())
        again = await store.record_attempt(
            late_attempt(claimed, clock.now), Delivered(), lease_token=claimed.lease_token
        )
        assert again is False
        assert (await delivery_state(store, 1))[:2] == ("dead", 1)

    run(scenario())


# When the next delivery is due.


def test_next_due_at_is_the_earliest_pending_delivery_of_those_subscribers(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START)

    async def scenario() -> None:
        store = await open_test_store(clock)
        assert await store.next_due_at(subscribers=["a", "b"]) is None
        await store.accept(event(1, ("a",), at=START + 50))
        await store.accept(event(2, ("b",), at=START + 20))
        await store.accept(event(3, ("c",), at=START + 5))
        assert await store.next_due_at(subscribers=["a"]) == pytest.approx(START + 50)
        assert await store.next_due_at(subscribers=["a", "b"]) == pytest.approx(START + 20)
        assert await store.next_due_at(subscribers=[]) is None
        assert await store.next_due_at(subscribers=["nobody"]) is None
        # A leased delivery is not due again before its lease runs out.
        clock.now = START + 60
        (leased,) = await claim(store, lease=30)
        due = await store.next_due_at(subscribers=["a"])
        assert due is None or due >= clock.now + 30
        # Nor is one that ended.
        await settle(store, leased, Delivered())
        assert await store.next_due_at(subscribers=["a"]) is None

    run(scenario())


# Heartbeats: leases of the silent are given back; the living keep theirs.


def test_leases_of_silent_owners_are_released_and_the_living_keep_theirs(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.accept(event(1))
        await store.accept(event(2))
        await store.heartbeat("dead")
        await store.heartbeat("alive")
        (mine,) = await claim(store, "dead", lease=60, limit=1)
        (theirs,) = await claim(store, "alive", lease=60, limit=1)
        clock.now += 4
        await store.heartbeat("alive")
        assert await store.release_leases_of_silent_owners(5) == []
        clock.now += 2  # "dead" silent for 6 s, "alive" for 2 s
        assert await store.release_leases_of_silent_owners(5) == ["dead"]
        (taken,) = await claim(store, "other")
        assert taken.delivery_id == mine.delivery_id
        assert taken.delivery_id != theirs.delivery_id
        # Forgotten: it is not released twice.
        clock.now += 60
        assert sorted(await store.release_leases_of_silent_owners(5)) == ["alive"]

    run(scenario())


def test_a_heartbeat_is_seen_by_another_store_on_the_database(
    open_test_store: OpenStore, run: Run
) -> None:
    """Another node judges a dispatcher silent or alive by what it wrote, not by a pid."""
    clock = Clock(START + 1)

    async def scenario() -> None:
        node_1 = await open_test_store(clock)
        node_2 = await open_test_store(clock)
        await node_1.accept(event(1))
        await node_1.heartbeat("node-1")
        await claim(node_1, "node-1", lease=600)
        clock.now += 3
        assert await node_2.release_leases_of_silent_owners(5) == []
        assert await claim(node_2, "node-2") == []
        clock.now += 3
        assert await node_2.release_leases_of_silent_owners(5) == ["node-1"]
        assert len(await claim(node_2, "node-2")) == 1

    run(scenario())


def test_a_clean_stop_forgets_its_heartbeat(open_test_store: OpenStore, run: Run) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        store = await open_test_store(clock)
        await store.heartbeat("w")
        await store.release_leases("w")
        clock.now += 60
        assert await store.release_leases_of_silent_owners(5) == []

    run(scenario())

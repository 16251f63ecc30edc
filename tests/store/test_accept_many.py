"""`accept_many`, on every backend: the events of one request (a provider that posts a batch,
docs/reference/providers.md `each`) stored in one commit, each with its own id and dedup; and a
quarantined batch released as its several events."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store.base import AcceptOutcome, NewEvent, StoreUnavailable
from tests.store import support
from tests.store.conftest import OpenStore, Run

# Every wait on the store is bounded: a store that hangs fails the test.
ANSWER_SECONDS = 10.0


def event(n: int, subject: str | None = None, *, ordered: tuple[str, ...] = ()) -> NewEvent:
    return support.event(n, ("a", "b"), subject=subject, ordered=ordered)


def test_accept_many_stores_every_event_with_its_deliveries(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        outcomes = await store.accept_many([event(1), event(2), event(3)])
        assert outcomes == ["accepted", "accepted", "accepted"]
        stats = await store.stats()
        assert (stats["events"], stats["pending"]) == (3, 6)
        for n in (1, 2, 3):
            assert await store.event_subscribers(support.event_id(n)) == ["a", "b"]

    run(scenario())


def test_accept_many_answers_each_event_by_its_own_id(open_test_store: OpenStore, run: Run) -> None:
    """A provider's retry of a batch, with one new event in it; and a copy inside one batch."""

    async def scenario() -> None:
        store = await open_test_store()
        assert await store.accept(event(1)) == "accepted"
        outcomes = await store.accept_many([event(1), event(2), event(2), event(3)])
        assert outcomes == ["duplicate", "accepted", "duplicate", "accepted"]
        assert await store.accept_many([event(3), event(1)]) == ["duplicate", "duplicate"]
        stats = await store.stats()
        assert (stats["events"], stats["pending"]) == (3, 6)

    run(scenario())


def test_accept_many_of_nothing_stores_nothing(open_test_store: OpenStore, run: Run) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        assert await store.accept_many([]) == []
        assert (await store.stats())["events"] == 0

    run(scenario())


def test_accept_many_stores_all_of_a_batch_or_none_of_it(
    open_test_store: OpenStore, run: Run
) -> None:
    # `subscribers=None` makes the store's own code raise (a bug, not a database error) while
    # it writes the batch: the events before it in the batch must not stay behind.
    broken = NewEvent(
        id=support.event_id(9),
        source="s",
        type="t",
        received_at=1.0,
        body=b"{}",
        subscribers=None,  # type: ignore[arg-type]
    )

    async def scenario() -> None:
        store = await open_test_store()
        with pytest.raises((TypeError, StoreUnavailable)):
            await asyncio.wait_for(store.accept_many([event(1), event(2), broken]), ANSWER_SECONDS)
        assert (await store.stats())["events"] == 0
        assert await store.event_record(support.event_id(1)) is None
        # The store goes on: the same events, without the broken one, are new.
        assert await store.accept_many([event(1), event(2)]) == ["accepted", "accepted"]

    run(scenario())


def test_accept_many_holds_an_ordered_subjects_later_events_behind_its_first(
    open_test_store: OpenStore, run: Run
) -> None:
    """Batch order is commit order: of two events of one subject in a batch, the first goes out
    to the ordered subscriber, the second waits for it (docs/reference/ordering.md)."""

    async def scenario() -> None:
        store = await open_test_store()
        outcomes = await store.accept_many(
            [event(1, "pay_1", ordered=("a",)), event(2, "pay_1", ordered=("a",))]
        )
        assert outcomes == ["accepted", "accepted"]
        assert (await support.delivery_state(store, 1))[0] == "pending"
        assert (await support.delivery_state(store, 2))[0] == "held"
        # `b` is not ordered: both are due to it at once.
        assert (await support.delivery_state(store, 2, "b"))[0] == "pending"

    run(scenario())


def test_two_stores_accepting_overlapping_batches_store_each_event_once(
    open_test_store: OpenStore, run: Run
) -> None:
    """Two processes (or nodes) receiving the same batch and a retry of part of it at once."""

    async def scenario() -> tuple[list[AcceptOutcome], list[AcceptOutcome]]:
        first = await open_test_store()
        second = await open_test_store()
        one, two = await asyncio.gather(
            first.accept_many([event(n) for n in range(0, 60)]),
            second.accept_many([event(n) for n in range(30, 90)]),
        )
        assert (await first.stats())["events"] == 90
        return one, two

    one, two = run(scenario())
    for n in range(90):
        seen = [*([one[n]] if n < 60 else []), *([two[n - 30]] if n >= 30 else [])]
        assert sorted(seen) == (["accepted", "duplicate"] if 30 <= n < 60 else ["accepted"])


def test_a_quarantined_batch_is_released_as_its_several_events(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        assert await store.accept(event(2)) == "accepted"
        quarantine_id = await store.quarantine(
            source="s",
            received_at=1.0,
            body=b'{"events": [1, 2, 3]}',
            headers={},
            verification="signature",
            error="no type",
        )
        outcomes = await store.release_quarantined(quarantine_id, [event(1), event(2), event(3)])
        assert outcomes == ["accepted", "duplicate", "accepted"]
        assert await store.quarantined() == []
        assert (await store.stats())["events"] == 3

    run(scenario())

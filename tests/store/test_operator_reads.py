"""What operators read from the store (gateway/operations/, the admin API, /metrics), on every
backend: event search with its filters and its keyset pages (newest first, ties split by id),
one event's record, dead-letter pages, dead counts, the backlog, and the stats."""

from __future__ import annotations

import pytest

from gateway.delivery.decide import Dead, Delivered, RetryAt
from gateway.store.base import Backlog, EventFilter, EventRow, Store
from tests.store.conftest import OpenStore, Run
from tests.store.support import START, Clock, attempt_of, claim, event, event_id, settle


async def search(
    store: Store,
    filters: EventFilter = EventFilter(),  # noqa: B008 - frozen, never changed
    after: tuple[float, str] | None = None,
    limit: int = 100,
) -> list[int]:
    """The event numbers a search finds, in its order."""
    return [int(row.id[4:]) for row in await store.search_events(filters, after=after, limit=limit)]


async def five_events(store: Store) -> None:
    for n, source, type_, subject, status, at in (
        (1, "s", "payment.succeeded", "pay_1", "succeeded", START + 1),
        (2, "s", "payment.failed", "pay_2", "failed", START + 2),
        (3, "t", "payment.failed", "pay_1", "failed", START + 3),
        (4, "s", "account.created", None, "created", START + 3),  # received with 3
        (5, "t", "payment.refunded", "pay_1", None, START + 5),
    ):
        new = event(n, ("a", "b"), at=at, source=source, subject=subject, type=type_, status=status)
        assert await store.accept(new) == "accepted"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (EventFilter(), [5, 4, 3, 2, 1]),
        (EventFilter(source="t"), [5, 3]),
        (EventFilter(type_glob="payment.*"), [5, 3, 2, 1]),
        (EventFilter(type_glob="*.failed"), [3, 2]),
        (EventFilter(type_glob="account.create?"), [4]),
        (EventFilter(type_glob="payment.failed"), [3, 2]),
        (EventFilter(type_glob="Payment.*"), []),  # types are lower case: a glob is exact
        (EventFilter(subject="pay_1"), [5, 3, 1]),
        (EventFilter(status="failed"), [3, 2]),
        (EventFilter(since=START + 2, until=START + 5), [4, 3, 2]),  # since in, until out
        (EventFilter(source="s", type_glob="payment.*"), [2, 1]),
        (EventFilter(subject="pay_1", since=START + 3), [5, 3]),
        (EventFilter(source="nobody"), []),
    ],
)
def test_search_events_keeps_what_the_filters_say_newest_first(
    open_test_store: OpenStore, run: Run, filters: EventFilter, expected: list[int]
) -> None:
    async def scenario() -> list[int]:
        store = await open_test_store(Clock(START + 10))
        await five_events(store)
        return await search(store, filters)

    assert run(scenario()) == expected


def test_search_pages_walk_a_keyset_newest_first_splitting_ties_by_id(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store(Clock(START + 10))
        await five_events(store)
        # Seven more received at one moment: the id decides between them.
        for n in range(10, 17):
            await store.accept(event(n, at=START + 4))
        seen: list[int] = []
        after = None
        for _ in range(20):
            page = await store.search_events(EventFilter(), after=after, limit=3)
            assert len(page) <= 3
            seen += [int(row.id[4:]) for row in page]
            if len(page) < 3:
                break
            after = (page[-1].received_at, page[-1].id)
        assert seen == [5, *reversed(range(10, 17)), 4, 3, 2, 1]
        # A page after the last item is empty; a filter pages the same way.
        assert await search(store, after=(START + 1, event_id(1))) == []
        assert await search(store, EventFilter(source="s"), after=(START + 3, event_id(4))) == [
            2,
            1,
        ]

    run(scenario())


def test_a_search_row_is_the_event_and_the_state_of_each_delivery(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store(Clock(START + 10))
        await five_events(store)
        claimed = {c.event_id: c for c in await claim(store, subscriber="a")}
        await settle(store, claimed[event_id(1)], Delivered())
        *_, oldest = await store.search_events(EventFilter(), after=None, limit=100)
        assert oldest == EventRow(
            id=event_id(1),
            source="s",
            type="payment.succeeded",
            subject="pay_1",
            received_at=START + 1,
            body=event(1).body,
            deliveries={"a": "delivered", "b": "pending"},
        )

    run(scenario())


def test_an_event_record_is_its_bytes_its_deliveries_and_their_attempts_oldest_first(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 10)

    async def scenario() -> None:
        store = await open_test_store(clock)
        assert await store.event_record("evt_unknown") is None
        await store.accept(event(1, ("a", "b"), at=START + 1))
        (first,) = await claim(store, subscriber="a")
        retry = RetryAt(at=START + 20)
        await settle(store, first, retry, START + 10)
        clock.now = START + 20
        (second,) = await claim(store, subscriber="a")
        await settle(store, second, Delivered(), START + 20)
        record = await store.event_record(event_id(1))
        assert record is not None
        assert (record.id, record.received_at, record.body) == (
            event_id(1),
            START + 1,
            event(1).body,
        )
        by_subscriber = {d.subscriber: d for d in record.deliveries}
        assert sorted(by_subscriber) == ["a", "b"]
        a, b = by_subscriber["a"], by_subscriber["b"]
        assert a.state == "delivered"
        assert a.attempts == (
            attempt_of(retry, first, START + 10),
            attempt_of(Delivered(), second, START + 20),
        )
        assert (b.state, b.next_attempt_at, b.attempts) == ("pending", START + 1, ())

    run(scenario())


# Dead letters.


async def kill_all(store: Store, subscriber: str, at: float = START) -> None:
    """Every due delivery to `subscriber` dies, of an attempt started at `at` (that attempt's
    end, 0.1 s later, is its dead_at)."""
    for claimed in await claim(store, subscriber=subscriber):
        await settle(store, claimed, Dead(), at)


def test_dead_letter_pages_split_letters_that_died_at_the_same_moment(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> list[str]:
        store = await open_test_store(Clock(START + 10))
        for n in range(7):
            await store.accept(event(n))
        await kill_all(store, "a", START + 10)  # every one dies at the same moment
        seen: list[str] = []
        after = None
        for _ in range(10):
            page = await store.dead_letter_page(subscriber=None, after=after, limit=3)
            assert len(page) <= 3
            assert all(letter.dead_at == pytest.approx(START + 10.1) for letter in page)
            seen += [letter.event_id for letter in page]
            if len(page) < 3:
                break
            after = (page[-1].dead_at, page[-1].delivery_id)
        return seen

    assert run(scenario()) == [event_id(n) for n in reversed(range(7))]


def test_dead_letters_newest_first_per_subscriber_and_counted(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 10)

    async def scenario() -> None:
        store = await open_test_store(clock)
        assert await store.dead_counts() == {}
        for n in range(3):
            await store.accept(event(n, ("a", "b", "c")))
        await kill_all(store, "a", START + 10)
        clock.now += 10
        await kill_all(store, "b", START + 20)
        for claimed in await claim(store, subscriber="c"):
            await settle(store, claimed, Delivered())
        assert await store.dead_counts() == {"a": 3, "b": 3}
        everything = await store.dead_letter_page(subscriber=None, after=None, limit=100)
        assert [d.subscriber for d in everything] == ["b"] * 3 + ["a"] * 3
        assert [d.dead_at for d in everything] == pytest.approx(
            [START + 20.1] * 3 + [START + 10.1] * 3
        )
        only_a = await store.dead_letter_page(subscriber="a", after=None, limit=100)
        assert [d.event_id for d in only_a] == [event_id(n) for n in (2, 1, 0)]
        assert all((d.attempts, d.last_error) == (1, "HTTP 503") for d in only_a)
        assert await store.dead_letter_page(subscriber="c", after=None, limit=100) == []

    run(scenario())


# Counts for health, metrics and the operator page.


def test_the_backlog_counts_undelivered_deliveries_per_subscriber_held_ones_too(
    open_test_store: OpenStore, run: Run
) -> None:
    clock = Clock(START + 100)

    async def scenario() -> None:
        store = await open_test_store(clock)
        assert await store.delivery_backlog() == {}
        for n, at in ((1, START + 3), (2, START + 1), (3, START + 2)):
            await store.accept(event(n, ("a", "b"), at=at, subject="pay_1", ordered=("b",)))
        await store.accept(event(4, ("c",), at=START + 4))
        # A leased delivery is still undelivered; a delivered one is not; a dead one neither.
        leased = await claim(store, subscriber="a", limit=1)
        for claimed in await claim(store, subscriber="c"):
            await settle(store, claimed, Delivered())
        assert await store.delivery_backlog() == {
            "a": Backlog(count=3, held=0, oldest_created_at=START + 1),
            "b": Backlog(count=3, held=2, oldest_created_at=START + 1),
        }
        await settle(store, leased[0], Dead())
        assert (await store.delivery_backlog())["a"] == Backlog(
            count=2, held=0, oldest_created_at=START + 2
        )

    run(scenario())


def test_stats_count_events_deliveries_by_state_and_waiting_quarantine(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store(Clock(START + 10))
        assert await store.stats() == {
            "events": 0,
            "pending": 0,
            "held": 0,
            "delivered": 0,
            "dead": 0,
            "quarantined": 0,
        }
        for n in range(4):
            await store.accept(event(n, ("a", "b"), subject="pay_1", ordered=("b",)))
        await kill_all(store, "a")  # 4 dead; b's: 1 pending, 3 held
        (first_b,) = await claim(store, subscriber="b")
        await settle(store, first_b, Delivered())  # 1 delivered, 1 pending, 2 held
        await store.quarantine(
            source="s", received_at=1.0, body=b"{", headers={}, verification="token", error="x"
        )
        assert await store.stats() == {
            "events": 4,
            "pending": 1,
            "held": 2,
            "delivered": 1,
            "dead": 4,
            "quarantined": 1,
        }

    run(scenario())

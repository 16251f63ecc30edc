"""Attempt records on PostgreSQL, on a real PostgreSQL (tests/postgres_server.py): a batch of
unordered deliveries' records is one statement (gateway/store/postgres/queue.py
`_RECORD_UNORDERED`), and a batch's records and the next claim are one transaction; whichever
way records come (a batch of sends, a batch with its claim, the group commit, the group commit's
transaction with ordered or with unordered events), each applies as it did record by record: the
first record of a lease only, never under a stale token nor once its delivery moved on, retried,
dead or delivered as decided, and an ordered delivery's end releasing the next of its key. A
group commit's batch of unordered events and unordered deliveries' records is four round trips
(gateway/store/postgres/ingest.py: no read of the records' keys first). A property test holds the
one statement to the general way (`record_under_key_locks`, which ordered deliveries still take)
on the same database. (What every backend promises: tests/store/test_delivery.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.delivery.decide import Dead, Decision, Delivered, RetryAt, attempt_outcome
from gateway.store.base import (
    AcceptOutcome,
    Attempt,
    AttemptRecord,
    ClaimedDelivery,
    ClaimRequest,
    NewEvent,
)
from gateway.store.postgres import PostgresStore, ingest
from gateway.store.postgres.ordering import lock_keys
from gateway.store.postgres.queue import (
    _CLAIM,
    _LIVE_LEASES,
    _RECORD_UNORDERED,
    record_ordered,
    record_under_key_locks,
    record_unordered,
)
from tests.store.support import (
    START,
    Clock,
    attempt_of,
    claim,
    event,
    event_id,
    listening,
    number,
)

T = TypeVar("T")
# Every wait is bounded: a store that hangs fails the test.
WAIT_SECONDS = 15.0
# Records come to the store these ways (gateway/delivery/recording.py, the group commit).
PATHS = ("record_attempts", "then_claim", "group_commit", "write_batch", "beside_unordered")
# The claim `then_claim` makes after its records: of a subscriber with nothing to claim.
IDLE_CLAIM = ClaimRequest(
    subscriber="idle", limit=10, max_in_flight=10, lease_seconds=30.0, owner="w"
)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 120))


@contextlib.asynccontextmanager
async def opened(url: str, clock: Clock) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(url, clock=clock)
    await store.open()
    try:
        yield store
    finally:
        await asyncio.wait_for(store.close(), 30)


def record_of(
    claimed: ClaimedDelivery, decision: Decision, at: float = START, token: int | None = None
) -> AttemptRecord:
    """A record of an attempt on `claimed` (under its lease, unless `token` says another)."""
    lease = claimed.lease_token if token is None else token
    return AttemptRecord(attempt_of(decision, claimed, at), decision, lease)


async def record(
    path: str, store: PostgresStore, url: str, records: Sequence[AttemptRecord], now: float
) -> list[bool]:
    """Record `records` together, the way `path` says (`now`: the store's clock); for each,
    whether it applied."""
    if path == "record_attempts":
        return await store.record_attempts(records)
    if path == "then_claim":
        applied, claimed = await store.record_attempts_then_claim(records, IDLE_CLAIM)
        assert claimed.deliveries == ()
        return applied
    if path == "group_commit":
        return list(
            await asyncio.gather(
                *(
                    store.record_attempt(r.attempt, r.decision, lease_token=r.lease_token)
                    for r in records
                )
            )
        )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        if path == "write_batch":
            # The group commit's transaction when an ordered event waits beside the records:
            # every key lock is taken first, and the records come after them.
            async with db.transaction():
                _, applied = await ingest.write_batch(db, [beside()], records, now)
            return applied
        # The group commit's batch when only unordered events wait beside the records: the
        # records first, as on their own (no key locked unless an ordered one could apply).
        assert path == "beside_unordered"
        outcomes, applied = await ingest.apply_batch(db, [beside(ordered=False)], records, now)
        assert outcomes == ["accepted"]
        return applied


_beside = itertools.count(900_000)


def beside(*, ordered: bool = True) -> NewEvent:
    """An event of a subscriber of its own, which the records' transaction takes a key lock of
    when `ordered`."""
    if not ordered:
        return event(next(_beside), ("elsewhere",))
    return event(next(_beside), ("elsewhere",), subject="beside", ordered=("elsewhere",))


# `delivery_row` after one attempt made with `record_of` at START (it ends 0.1 s later, and a
# failed one's error is "HTTP 503", as `attempt_of` makes them), and after a release.
FINISHED = START + 0.1
DELIVERED_ROW = ("delivered", 1, START, False, None, FINISHED)
DEAD_ROW = ("dead", 1, START, False, "HTTP 503", FINISHED)


def retried_row(at: float) -> tuple[Any, ...]:
    """A delivery whose failed attempt was recorded with a retry due `at`."""
    return ("pending", 1, at, False, "HTTP 503", None)


def released_row(due: float) -> tuple[Any, ...]:
    """An ordered delivery its predecessor's record released: never tried, due `due`."""
    return ("pending", 0, due, False, None, None)


async def delivery_row(url: str, n: int, subscriber: str = "a") -> tuple[Any, ...]:
    """(state, attempts, next_attempt_at, leased, last_error, finished_at) of a delivery."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        cursor = await db.execute(
            "SELECT state, attempts, next_attempt_at, lease_until IS NOT NULL, last_error,"
            " finished_at FROM deliveries WHERE event_id = %s AND subscriber = %s",
            (event_id(n), subscriber),
        )
        row = await cursor.fetchone()
    assert row is not None
    return tuple(row)


async def attempt_rows(url: str, n: int, subscriber: str = "a") -> list[tuple[Any, ...]]:
    """(outcome, started_at, status_code, error) of a delivery's attempts, in order."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        cursor = await db.execute(
            "SELECT a.outcome, a.started_at, a.status_code, a.error FROM attempts a"
            " JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE d.event_id = %s AND d.subscriber = %s ORDER BY a.id",
            (event_id(n), subscriber),
        )
        return [tuple(row) for row in await cursor.fetchall()]


# Each record as decided, whichever way it came.


@pytest.mark.parametrize("path", PATHS)
def test_a_batch_of_ordered_and_unordered_records_settles_each_and_releases_the_next_held(
    postgres_url: str, path: str
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(postgres_url, clock) as store:
            for n in (1, 2):
                await store.accept(event(n, ("a", "o"), subject="pay_1", ordered=("o",)))
            await store.accept(event(3, ("a",)))
            to_a = await claim(store, subscriber="a")
            (to_o,) = await claim(store, subscriber="o")  # event 2's waits behind it
            retry_at = START + 100
            records = [
                record_of(to_a[0], Delivered()),
                record_of(to_o, Delivered()),
                record_of(to_a[1], RetryAt(at=retry_at)),
                record_of(to_a[2], Dead()),
            ]
            assert await record(path, store, postgres_url, records, clock.now) == [True] * 4
            assert await delivery_row(postgres_url, 1) == DELIVERED_ROW
            assert await delivery_row(postgres_url, 1, "o") == DELIVERED_ROW
            assert await delivery_row(postgres_url, 2) == retried_row(retry_at)
            assert await delivery_row(postgres_url, 3) == DEAD_ROW
            # Event 2's ordered delivery: released, due at the record's "now".
            assert await delivery_row(postgres_url, 2, "o") == released_row(clock.now)
            assert await attempt_rows(postgres_url, 2) == [("retry", START, 503, "HTTP 503")]
            assert await attempt_rows(postgres_url, 1, "o") == [("delivered", START, 200, None)]

    run(scenario())


@pytest.mark.parametrize("path", PATHS)
def test_of_several_records_of_one_lease_in_a_batch_the_first_applies(
    postgres_url: str, path: str
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(postgres_url, clock) as store:
            await store.accept(event(1))
            await store.accept(event(2))
            (one,) = await claim(store, "w1", limit=1)
            (two_old,) = await claim(store, "w1", lease=5)
            clock.now += 6
            (two,) = await claim(store, "w2", lease=5)
            assert two.delivery_id == two_old.delivery_id
            retry_at = clock.now + 60
            records = [
                record_of(one, Delivered()),
                record_of(two_old, Delivered()),  # stale: not even as the first of its kind
                record_of(one, Dead()),
                record_of(two, RetryAt(at=retry_at), clock.now),
                record_of(two, Delivered(), clock.now),
                record_of(one, Delivered()),
            ]
            applied = await record(path, store, postgres_url, records, clock.now)
            assert applied == [True, False, False, True, False, False]
            assert (await delivery_row(postgres_url, 1))[:2] == ("delivered", 1)
            assert await attempt_rows(postgres_url, 1) == [("delivered", START, 200, None)]
            assert (await delivery_row(postgres_url, 2))[:3] == ("pending", 1, retry_at)
            assert await attempt_rows(postgres_url, 2) == [("retry", clock.now, 503, "HTTP 503")]

    run(scenario())


@pytest.mark.parametrize("path", PATHS)
def test_a_stale_lease_token_settles_nothing_and_writes_no_attempt(
    postgres_url: str, path: str
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(postgres_url, clock) as store:
            await store.accept(event(1))
            (old,) = await claim(store, "slow", lease=5)
            clock.now += 6
            (new,) = await claim(store, "fresh", lease=5)
            before = await delivery_row(postgres_url, 1)
            stale = [record_of(old, Delivered()), record_of(new, Dead(), token=new.lease_token + 1)]
            assert await record(path, store, postgres_url, stale, clock.now) == [False, False]
            assert await delivery_row(postgres_url, 1) == before
            assert before[:4] == ("pending", 0, START, True)
            assert await attempt_rows(postgres_url, 1) == []
            # The lease is still the fresh worker's: nobody else claims it, and its record counts.
            assert await claim(store, "third") == []
            assert await record(
                path, store, postgres_url, [record_of(new, Delivered())], clock.now
            ) == [True]
            assert (await delivery_row(postgres_url, 1))[:2] == ("delivered", 1)

    run(scenario())


@pytest.mark.parametrize("path", PATHS)
def test_records_of_deliveries_that_moved_on_meanwhile_change_nothing(
    postgres_url: str, path: str
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(postgres_url, clock) as store:
            for n in range(1, 5):
                await store.accept(event(n))
            delivered, dead, redriven, live = await claim(store)
            await store.record_attempts(
                [record_of(delivered, Delivered()), record_of(dead, Dead())]
            )
            await store.record_attempts([record_of(redriven, Dead(), START + 10)])
            assert await store.redrive(now=clock.now, since=START + 5) == 1
            before = [await delivery_row(postgres_url, n) for n in range(1, 5)]
            late = [record_of(d, Delivered()) for d in (delivered, dead, redriven, live)]
            assert await record(path, store, postgres_url, late, clock.now) == [
                False,
                False,
                False,
                True,
            ]
            after = [await delivery_row(postgres_url, n) for n in range(1, 5)]
            assert after[:3] == before[:3]
            assert before[2][:2] == ("pending", 0)
            assert after[3][:2] == ("delivered", 1)
            assert [len(await attempt_rows(postgres_url, n)) for n in range(1, 5)] == [1, 1, 1, 1]

    run(scenario())


@pytest.mark.parametrize("path", PATHS)
def test_a_retry_is_due_again_when_decided_and_a_dead_one_is_a_dead_letter(
    postgres_url: str, path: str
) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(postgres_url, clock) as store:
            for n in (1, 2):
                await store.accept(event(n))
            retried, died = await claim(store)
            retry_at = START + 30
            records = [record_of(retried, RetryAt(at=retry_at)), record_of(died, Dead(), START)]
            assert await record(path, store, postgres_url, records, clock.now) == [True, True]
            assert await claim(store) == []
            assert await store.next_due_at(subscribers=["a"]) == pytest.approx(retry_at)
            clock.now = retry_at
            (again,) = await claim(store)
            assert (again.delivery_id, again.attempts, again.due_at) == (
                retried.delivery_id,
                1,
                retry_at,
            )
            (letter,) = await store.dead_letter_page(subscriber=None, after=None, limit=10)
            assert (letter.delivery_id, letter.attempts, letter.last_error) == (
                died.delivery_id,
                1,
                "HTTP 503",
            )
            assert letter.dead_at == pytest.approx(START + 0.1)

    run(scenario())


def test_a_record_that_releases_a_held_delivery_wakes_the_other_nodes(postgres_url: str) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(postgres_url, clock) as sender, opened(postgres_url, clock) as other:
            for n in (1, 2):
                await sender.accept(event(n, ("o",), subject="pay_1", ordered=("o",)))
            (first,) = await claim(sender, subscriber="o")
            woken = asyncio.Event()
            other.watch_new_deliveries(woken.set)
            await listening(postgres_url)
            await sender.record_attempts([record_of(first, Delivered())])
            await asyncio.wait_for(woken.wait(), WAIT_SECONDS)
            woken.clear()
            (second,) = await claim(sender, subscriber="o")
            assert second.event_id == event_id(2)
            applied, _ = await sender.record_attempts_then_claim(
                [record_of(second, RetryAt(at=START + 60))], IDLE_CLAIM
            )
            assert applied == [True]
            await asyncio.sleep(0.3)
            assert not woken.is_set(), "a retry keeps its key: nothing released"

    run(scenario())


# Key locks before row locks.


def test_with_an_ordered_record_among_them_the_statement_locks_no_row_before_the_keys(
    postgres_url: str,
) -> None:
    """A transaction never waits for a key while holding a row (ordering.py): with an ordered
    delivery's record in the batch, the one statement settles and locks nothing, and says which
    keys to lock; then the batch is recorded, unordered and ordered alike."""
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(postgres_url, clock) as store:
            await store.accept(event(1, ("a", "o"), subject="pay_1", ordered=("o",)))
            (to_a,) = await claim(store, subscriber="a")
            (to_o,) = await claim(store, subscriber="o")
            records = [record_of(to_a, Delivered()), record_of(to_o, Dead())]
            async with (
                await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db,
                await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as other,
                db.transaction(),
            ):
                first = await record_unordered(db, records, keys_locked=False)
                assert first.applied == [False, False]
                assert (first.ordered, first.keys, first.waiting) == (
                    [1],
                    [("o", "s/pay_1")],
                    True,
                )
                # Neither row is locked: another session takes both at once.
                cursor = await other.execute(
                    "SELECT id FROM deliveries WHERE id = ANY(%s) FOR NO KEY UPDATE NOWAIT",
                    ([to_a.delivery_id, to_o.delivery_id],),
                )
                assert len(await cursor.fetchall()) == 2
                assert await record_ordered(db, records, clock.now, first) == ([True, True], False)
            assert (await delivery_row(postgres_url, 1))[:2] == ("delivered", 1)
            assert (await delivery_row(postgres_url, 1, "o"))[:2] == ("dead", 1)

    run(scenario())


# The claim after the records, in the same transaction.


def test_a_batch_s_records_and_its_claim_see_each_other(postgres_url: str) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(postgres_url, clock) as store:
            for n in range(1, 5):
                await store.accept(event(n))
            for n in (5, 6):
                await store.accept(event(n, ("o",), subject="pay_1", ordered=("o",)))
            sent = await claim(store, limit=2, max_in_flight=2)
            # The two leases the records give back are free for the claim, within its bound.
            applied, claimed = await store.record_attempts_then_claim(
                [record_of(d, Delivered()) for d in sent],
                ClaimRequest(
                    subscriber="a", limit=10, max_in_flight=2, lease_seconds=30, owner="w"
                ),
            )
            assert applied == [True, True]
            assert [d.event_id for d in claimed.deliveries] == [event_id(3), event_id(4)]
            assert claimed.full
            # What a record released is claimable by the claim that follows it.
            (first,) = await claim(store, subscriber="o")
            applied, claimed = await store.record_attempts_then_claim(
                [record_of(first, Delivered())],
                ClaimRequest(
                    subscriber="o", limit=10, max_in_flight=10, lease_seconds=30, owner="w"
                ),
            )
            assert applied == [True]
            assert [d.event_id for d in claimed.deliveries] == [event_id(6)]
            # No records: the claim alone.
            clock.now += 31
            applied, claimed = await store.record_attempts_then_claim([], IDLE_CLAIM)
            assert (applied, claimed.deliveries) == ([], ())
            request = ClaimRequest(
                subscriber="a", limit=10, max_in_flight=10, lease_seconds=30, owner="w"
            )
            applied, claimed = await store.record_attempts_then_claim([], request)
            assert applied == []
            assert [d.event_id for d in claimed.deliveries] == [event_id(3), event_id(4)]

    run(scenario())


# Round trips: one statement for a batch of unordered deliveries' records.


class Statements:
    """Every statement any psycopg connection of this process runs, and every transaction
    block it opens, while `watching` (the pool's and the writer's checks, empty statements,
    left out)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.queries: list[str] = []
        self.transactions = 0
        self.watching = False
        self._lock = threading.Lock()
        execute = psycopg.AsyncConnection.execute
        transaction = psycopg.AsyncConnection.transaction

        def counted_execute(db: Any, query: Any, *args: Any, **kwargs: Any) -> Awaitable[Any]:
            text = query.decode() if isinstance(query, bytes) else str(query)
            if self.watching and text:
                with self._lock:
                    self.queries.append(text)
            return execute(db, query, *args, **kwargs)

        def counted_transaction(db: Any, *args: Any, **kwargs: Any) -> Any:
            if self.watching:
                with self._lock:
                    self.transactions += 1
            return transaction(db, *args, **kwargs)

        monkeypatch.setattr(psycopg.AsyncConnection, "execute", counted_execute)
        monkeypatch.setattr(psycopg.AsyncConnection, "transaction", counted_transaction)

    async def during(self, call: Callable[[], Awaitable[T]]) -> T:
        with self.watched():
            return await call()

    @contextlib.contextmanager
    def watched(self) -> Iterator[None]:
        self.queries.clear()
        self.transactions = 0
        self.watching = True
        try:
            yield
        finally:
            self.watching = False

    @property
    def round_trips(self) -> int:
        """The statements, and each transaction block's BEGIN and COMMIT."""
        return len(self.queries) + 2 * self.transactions


def test_a_batch_of_64_unordered_records_is_one_statement(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(START + 1)
    statements = Statements(monkeypatch)

    async def batch(store: PostgresStore, first: int) -> list[AttemptRecord]:
        await store.accept_many([event(n) for n in range(first, first + 64)])
        claimed = await claim(store, limit=64)
        assert len(claimed) == 64
        decisions: list[Decision] = [Delivered(), RetryAt(at=START + 60), Dead()]
        return [record_of(d, decisions[i % 3]) for i, d in enumerate(claimed)]

    async def scenario() -> None:
        async with opened(postgres_url, clock) as store:
            records = await batch(store, 0)
            applied = await statements.during(lambda: store.record_attempts(records))
            assert applied == [True] * 64
            assert (statements.queries, statements.transactions) == ([_RECORD_UNORDERED], 0)

            records = await batch(store, 100)
            request = ClaimRequest(
                subscriber="a", limit=64, max_in_flight=1000, lease_seconds=30, owner="w"
            )
            applied, _ = await statements.during(
                lambda: store.record_attempts_then_claim(records, request)
            )
            assert applied == [True] * 64
            assert statements.transactions == 1
            assert statements.queries[0] == _RECORD_UNORDERED
            assert statements.queries[2:] == [_LIVE_LEASES, _CLAIM]

            # The group commit's batches of records alone: each one statement, no more (its
            # connection made beforehand, by an accept).
            records = await batch(store, 200)
            assert await store.accept(event(300)) == "accepted"

            async def one_by_one() -> list[bool]:
                return await record("group_commit", store, postgres_url, records, clock.now)

            assert await statements.during(one_by_one) == [True] * 64
            assert statements.transactions == 0
            assert set(statements.queries) == {_RECORD_UNORDERED}

    run(scenario())


@contextlib.asynccontextmanager
async def writer_held(store: PostgresStore, url: str, held: NewEvent) -> AsyncIterator[None]:
    """The store's group commit held while in the block: its write of `held` waits for another
    session inserting the same event, so whatever is submitted meanwhile waits too, and
    is the writer's next batch, whole. At the block's end that session rolls back (psycopg's
    BEGIN and ROLLBACK are no `execute`: `Statements` does not see them), the held write is
    accepted, and the writer goes on to the next batch."""
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as other,
        other.transaction(force_rollback=True),
    ):
        await ingest.write_batch(other, [held], [], None)
        accepted = asyncio.create_task(store.accept(held))
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            cursor = await other.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            row = await cursor.fetchone()
            if row is not None and row[0] >= 1:
                break
            assert time.monotonic() < deadline, "the writer never waited for the event"
            await asyncio.sleep(0.02)
        yield
    assert await asyncio.wait_for(accepted, WAIT_SECONDS) == "accepted"


async def one_batch(
    store: PostgresStore,
    url: str,
    events: Sequence[NewEvent],
    records: Sequence[AttemptRecord],
    statements: Statements,
) -> tuple[list[AcceptOutcome], list[bool]]:
    """`events` accepted and `records` recorded through the group commit, in one batch of its
    own (`writer_held` gathers them); `statements` watches that batch only."""
    with contextlib.ExitStack() as watching:
        async with writer_held(store, url, beside(ordered=False)):
            watching.enter_context(statements.watched())
            accepted = asyncio.gather(*(store.accept(e) for e in events))
            recorded = asyncio.gather(
                *(
                    store.record_attempt(r.attempt, r.decision, lease_token=r.lease_token)
                    for r in records
                )
            )
            await asyncio.sleep(0)  # each write submitted, waiting behind the held one
        answers = asyncio.gather(accepted, recorded)
        outcomes, applied = await asyncio.wait_for(answers, WAIT_SECONDS)
    return list(outcomes), list(applied)


def test_a_group_commit_batch_of_unordered_events_and_records_is_four_round_trips(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New events of no ordered subscriber beside attempt records: BEGIN, the records' one
    statement, the events' (`_ACCEPT`), COMMIT. The records' keys are not read first (that read
    made five): no event needs a key, and the records lock theirs, if any, as on their own.
    With an ordered delivery's record among them, its key is locked and the next of the key
    released, the events still one statement."""
    clock = Clock(START + 1)
    statements = Statements(monkeypatch)

    async def scenario() -> None:
        async with opened(postgres_url, clock) as store:
            for n in (1, 2):
                await store.accept(event(n, ("a", "o"), subject="pay_1", ordered=("o",)))
            for n in (3, 4):
                await store.accept(event(n))
            to_a = await claim(store)
            (to_o,) = await claim(store, subscriber="o")  # event 2's waits behind it
            retry_at = START + 100
            records = [
                record_of(to_a[0], Delivered()),
                record_of(to_a[1], RetryAt(at=retry_at)),
                record_of(to_a[2], Dead()),
                record_of(to_a[0], Dead()),  # a second record of one lease: too late
            ]
            new = [event(10), event(3), event(11)]
            outcomes, applied = await one_batch(store, postgres_url, new, records, statements)
            assert outcomes == ["accepted", "duplicate", "accepted"]
            assert applied == [True, True, True, False]
            assert statements.queries == [_RECORD_UNORDERED, ingest._ACCEPT]
            assert statements.transactions == 1
            assert statements.round_trips == 4
            assert await delivery_row(postgres_url, 1) == DELIVERED_ROW
            assert await delivery_row(postgres_url, 2) == retried_row(retry_at)
            assert await delivery_row(postgres_url, 3) == DEAD_ROW
            assert await attempt_rows(postgres_url, 1) == [("delivered", START, 200, None)]
            assert await attempt_rows(postgres_url, 2) == [("retry", START, 503, "HTTP 503")]
            assert await attempt_rows(postgres_url, 3) == [("failed", START, 503, "HTTP 503")]
            assert [number(d) for d in await claim(store)] == [10, 11]

            # An ordered delivery's record too: the first statement settles nothing, then the
            # key is locked, the unordered record settled, the ordered one the general way
            # (rows locked and read, attempts, deliveries, the release) and the wake-up. As
            # many round trips as with the keys read first: eleven.
            records = [record_of(to_o, Delivered()), record_of(to_a[3], Delivered())]
            outcomes, applied = await one_batch(
                store, postgres_url, [event(12)], records, statements
            )
            assert (outcomes, applied) == (["accepted"], [True, True])
            assert statements.queries[0] == _RECORD_UNORDERED
            assert ingest._ACCEPT in statements.queries
            assert statements.transactions == 1
            assert statements.round_trips == 11
            assert await delivery_row(postgres_url, 1, "o") == DELIVERED_ROW
            assert (await delivery_row(postgres_url, 4))[:2] == ("delivered", 1)
            assert await attempt_rows(postgres_url, 1, "o") == [("delivered", START, 200, None)]
            assert await attempt_rows(postgres_url, 4) == [("delivered", START, 200, None)]
            # Event 2's ordered delivery: released, due at the batch's "now".
            assert await delivery_row(postgres_url, 2, "o") == released_row(clock.now)
            assert [number(d) for d in await claim(store, subscriber="o")] == [2]

    run(scenario())


# The one statement against the general way, on the same database.

# Mostly one subject: ordered deliveries held behind each other, released by records.
SUBJECTS = ("x", "x", "y", None)
# What becomes of a claimed delivery before the batch: still leased, settled (retried, dead or
# delivered), taken over by a second claim, or given back. One an ordering key holds is never
# claimed.
HISTORIES = ("claimed", "claimed", "settled", "taken_over", "released")
Scenario = tuple[list[tuple[str | None, bool]], list[str], list[tuple[int, int, str, str | None]]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """Events (subject, whether subscriber "o" orders them), what becomes of each delivery
    (two per event), and the batch: (delivery index, token offset from the delivery's
    latest, decision, error)."""
    events = draw(
        st.lists(st.tuples(st.sampled_from(SUBJECTS), st.booleans()), min_size=2, max_size=6)
    )
    deliveries = 2 * len(events)
    histories = draw(st.lists(st.sampled_from(HISTORIES), min_size=deliveries, max_size=deliveries))
    records = draw(
        st.lists(
            st.tuples(
                st.integers(0, deliveries - 1),
                st.sampled_from((0, 0, 0, -1, 1)),
                st.sampled_from(("delivered", "retry", "dead")),
                st.sampled_from((None, "HTTP 503", "timeout")),
            ),
            min_size=1,
            max_size=12,
        )
    )
    return events, histories, records


def decision_of(kind: str, at: float) -> Decision:
    if kind == "retry":
        return RetryAt(at=at + 45)
    return Delivered() if kind == "delivered" else Dead()


def record_for(
    delivery_id: int, token: int, decision: Decision, at: float, error: str | None
) -> AttemptRecord:
    outcome = attempt_outcome(decision)
    attempt = Attempt(
        delivery_id=delivery_id,
        started_at=at,
        duration=0.25,
        outcome=outcome,
        status_code=200 if outcome == "delivered" else 503,
        error=error,
        response_excerpt=None if error is None else f"<{error}>",
    )
    return AttemptRecord(attempt, decision, token)


async def snapshot(db: psycopg.AsyncConnection[Any], ids: list[int]) -> tuple[Any, ...]:
    """Every column of the deliveries, and each one's attempts in the order written (as every
    read lists them: of a batch mixing ordered and unordered deliveries, the unordered ones'
    attempts are written first, so the order between deliveries is not the batch's)."""
    cursor = await db.execute(
        "SELECT id, state, attempts, next_attempt_at, lease_until, lease_owner, lease_token,"
        " last_error, finished_at, ordering_key FROM deliveries WHERE id = ANY(%s) ORDER BY id",
        (ids,),
    )
    deliveries = await cursor.fetchall()
    cursor = await db.execute(
        "SELECT delivery_id, started_at, duration, outcome, status_code, error,"
        " response_excerpt FROM attempts WHERE delivery_id = ANY(%s) ORDER BY delivery_id, id",
        (ids,),
    )
    return deliveries, await cursor.fetchall()


async def general_way(
    db: psycopg.AsyncConnection[Any], records: list[AttemptRecord], now: float
) -> tuple[list[bool], bool]:
    """Record attempts as before the one statement: the keys of the records' deliveries
    locked, then every record the general way."""
    cursor = await db.execute(
        "SELECT subscriber, ordering_key FROM deliveries"
        " WHERE id = ANY(%s) AND ordering_key IS NOT NULL",
        ([r.attempt.delivery_id for r in records],),
    )
    locked = await lock_keys(db, [(str(s), str(k)) for s, k in await cursor.fetchall()])
    return await record_under_key_locks(db, records, now, locked)


async def one_statement_first(
    db: psycopg.AsyncConnection[Any], records: list[AttemptRecord], now: float
) -> tuple[list[bool], bool]:
    first = await record_unordered(db, records, keys_locked=False)
    return await record_ordered(db, records, now, first)


def test_the_one_statement_records_as_the_general_way_does(postgres_url: str) -> None:
    clock = Clock(START + 1)
    examples = itertools.count(1)
    runner = asyncio.Runner()

    async def open_both() -> tuple[PostgresStore, psycopg.AsyncConnection[Any]]:
        store = PostgresStore(postgres_url, clock=clock)
        await store.open()
        return store, await psycopg.AsyncConnection.connect(postgres_url, autocommit=True)

    store, db = runner.run(open_both())

    async def claim_each(subscriber: str, round_: str) -> dict[int, str]:
        """Claim the subscriber's due deliveries one at a time, each by an owner of its own."""
        owners: dict[int, str] = {}
        while True:
            owner = f"{round_}-{subscriber}-{len(owners)}"
            claimed = await claim(store, owner, subscriber=subscriber, limit=1)
            if not claimed:
                return owners
            owners[claimed[0].delivery_id] = owner

    async def compare(scenario: Scenario) -> None:
        events, histories, wanted = scenario
        example = next(examples)
        # Subscribers of this example's own: its claims take none of another's deliveries.
        a, o = f"a{example}", f"o{example}"
        made = [
            event(
                example * 10 + i,
                (a, o),
                subject=None if subject is None else f"{example}-{subject}",
                ordered=(o,) if ordered else (),
            )
            for i, (subject, ordered) in enumerate(events)
        ]
        await store.accept_many(made)
        cursor = await db.execute(
            "SELECT id FROM deliveries WHERE event_id = ANY(%s) ORDER BY id",
            ([e.id for e in made],),
        )
        ids = [int(row[0]) for row in await cursor.fetchall()]
        history = dict(zip(ids, histories, strict=True))
        owners = {**await claim_each(a, "first"), **await claim_each(o, "first")}
        tokens = await lease_tokens(db, ids)
        kinds = ("retry", "dead", "delivered")
        await store.record_attempts(
            [
                record_for(d, tokens[d], decision_of(kinds[d % 3], clock.now), clock.now, "x")
                for d in owners
                if history[d] == "settled"
            ]
        )
        for delivery_id, owner in owners.items():
            if history[delivery_id] == "taken_over":
                await store.release_leases(owner)
        await claim_each(a, "second")
        await claim_each(o, "second")
        for delivery_id, owner in owners.items():
            if history[delivery_id] == "released":
                await store.release_leases(owner)
        tokens = await lease_tokens(db, ids)
        records = [
            record_for(
                ids[index],
                tokens[ids[index]] + offset,
                decision_of(kind, clock.now),
                clock.now,
                error,
            )
            for index, offset, kind, error in wanted
        ]
        answers = []
        for way in (general_way, one_statement_first):
            async with db.transaction(force_rollback=True):
                outcome = await way(db, records, clock.now)
                answers.append((outcome, await snapshot(db, ids)))
        assert answers[1] == answers[0]
        clock.now += 1

    @settings(max_examples=100, deadline=None)
    @given(scenario=scenarios())
    def check(scenario: Scenario) -> None:
        runner.run(compare(scenario))

    async def close_both() -> None:
        await db.close()
        await asyncio.wait_for(store.close(), 30)

    try:
        check()
    finally:
        runner.run(close_both())
        runner.close()


async def lease_tokens(db: psycopg.AsyncConnection[Any], ids: list[int]) -> dict[int, int]:
    cursor = await db.execute("SELECT id, lease_token FROM deliveries WHERE id = ANY(%s)", (ids,))
    return {int(row[0]): int(row[1]) for row in await cursor.fetchall()}

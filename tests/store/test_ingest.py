"""The store's ingress side, on every backend: group commit (`watch_commits` hears each commit's
batch size), duplicates (in one batch, and racing on two stores), quarantine, and a store that
cannot take a write answering StoreUnavailable at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.delivery.decide import Delivered
from gateway.store.base import ClaimRequest, NewEvent, Store, StoreUnavailable
from tests.store import support
from tests.store.conftest import OpenStore, Run, TestDatabase
from tests.store.support import attempt_of

# Every wait on the store is bounded: a store that hangs fails the test.
ANSWER_SECONDS = 10.0


def event(n: int, subscribers: tuple[str, ...] = ("a", "b")) -> NewEvent:
    return support.event(n, subscribers, at=time.time())


def test_concurrent_writes_share_commits(open_test_store: OpenStore, run: Run) -> None:
    batches: list[int] = []  # writes per commit, as the store reports each commit

    async def scenario() -> None:
        store = await open_test_store()
        store.watch_commits(batches.append)
        outcomes = await asyncio.gather(*(store.accept(event(n)) for n in range(200)))
        assert outcomes == ["accepted"] * 200
        assert (await store.stats())["events"] == 200

    run(scenario())
    commits, writes = len(batches), sum(batches)
    assert writes == 200
    # 200 writes waiting together go out in a handful of transactions, one flush each.
    assert commits <= 20, f"200 concurrent writes took {commits} commits"


def test_concurrent_copies_of_one_event_store_it_once(open_test_store: OpenStore, run: Run) -> None:
    async def scenario() -> list[str]:
        store = await open_test_store()
        outcomes: list[str] = list(
            await asyncio.gather(*(store.accept(event(7)) for _ in range(50)))
        )
        stats = await store.stats()
        assert (stats["events"], stats["pending"]) == (1, 2)
        return outcomes

    outcomes = run(scenario())
    assert outcomes.count("accepted") == 1
    assert outcomes.count("duplicate") == 49


def test_a_duplicate_writes_nothing(open_test_store: OpenStore, run: Run) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        first = event(1)
        assert await store.accept(first) == "accepted"
        # The same id again, even with other contents and subscribers, changes nothing.
        copy = NewEvent(
            id=first.id,
            source="other",
            type="payment.failed",
            received_at=first.received_at + 5,
            body=b"{}",
            subscribers=("c",),
        )
        assert await store.accept(copy) == "duplicate"
        record = await store.event_record(first.id)
        assert record is not None
        assert record.body == first.body
        assert [d.subscriber for d in record.deliveries] == ["a", "b"]

    run(scenario())


def test_two_stores_on_one_database_accept_each_event_once(
    open_test_store: OpenStore, run: Run
) -> None:
    """Two gateway processes' (or nodes') stores: a copy of an event racing the original
    through the other store is still a duplicate."""

    async def scenario() -> tuple[list[str], list[str]]:
        first = await open_test_store()
        second = await open_test_store()
        both = await asyncio.gather(
            asyncio.gather(*(first.accept(event(n)) for n in range(300))),
            asyncio.gather(*(second.accept(event(n)) for n in range(150, 450))),
        )
        assert (await first.stats())["events"] == 450
        return list(both[0]), list(both[1])

    from_first, from_second = run(scenario())
    outcomes = {
        n: [*([from_first[n]] if n < 300 else []), *([from_second[n - 150]] if n >= 150 else [])]
        for n in range(450)
    }
    for n, seen in outcomes.items():
        assert sorted(seen) == (["accepted", "duplicate"] if 150 <= n < 300 else ["accepted"])


def test_an_event_with_no_subscriber_is_stored_with_no_delivery(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        assert await store.accept(event(1, ())) == "accepted"
        record = await store.event_record(event(1).id)
        assert record is not None
        assert record.deliveries == ()
        assert (await store.stats())["pending"] == 0

    run(scenario())


def test_a_failing_commit_watcher_fails_nothing_and_stops_nothing(
    open_test_store: OpenStore, run: Run
) -> None:
    watched: list[int] = []

    def failing_watcher(writes: int) -> None:
        watched.append(writes)
        raise ValueError("a bug in a metrics hook")

    async def scenario() -> None:
        store = await open_test_store()
        store.watch_commits(failing_watcher)
        # The batch is committed: its callers get their outcome, not the watcher's error.
        assert await asyncio.wait_for(store.accept(event(1)), ANSWER_SECONDS) == "accepted"
        assert await asyncio.wait_for(store.accept(event(2)), ANSWER_SECONDS) == "accepted"
        await store.ping()
        assert (await store.stats())["events"] == 2

    run(scenario())
    assert len(watched) == 2


def test_a_batch_raising_a_non_database_error_fails_its_callers_and_the_writer_goes_on(
    open_test_store: OpenStore, run: Run
) -> None:
    # `subscribers=None` makes the batch's own code raise TypeError (not a database error): a
    # bug inside the writer, as a real one would be.
    broken = NewEvent(
        id="evt_broken",
        source="s",
        type="t",
        received_at=1.0,
        body=b"{}",
        subscribers=None,  # type: ignore[arg-type]
    )

    async def scenario() -> None:
        store = await open_test_store()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.accept(broken), ANSWER_SECONDS)
        # Nothing of the failed batch stayed behind, and the next write works.
        assert await asyncio.wait_for(store.accept(event(1)), ANSWER_SECONDS) == "accepted"
        await store.ping()
        assert (await store.stats())["events"] == 1
        assert await store.event_record("evt_broken") is None

    run(scenario())


# Quarantine: kept raw, listed oldest first, released, errors noted, dropped.


async def quarantine(store: Store, received_at: float, body: bytes = b"{") -> int:
    return await store.quarantine(
        source="s",
        received_at=received_at,
        body=body,
        headers={"x": "y"},
        verification="token",
        error="not JSON",
    )


def test_quarantine_keeps_the_raw_body_until_released(open_test_store: OpenStore, run: Run) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        quarantine_id = await quarantine(store, 1.0, b"\xff not json")
        (payload,) = await store.quarantined()
        assert payload.id == quarantine_id
        assert (payload.source, payload.received_at, payload.body) == ("s", 1.0, b"\xff not json")
        assert (payload.headers, payload.verification, payload.error) == (
            {"x": "y"},
            "token",
            "not JSON",
        )
        assert (await store.stats())["quarantined"] == 1
        assert await store.release_quarantined(quarantine_id, [event(3)]) == ["accepted"]
        assert await store.quarantined() == []
        assert (await store.stats())["quarantined"] == 0
        assert await store.event_subscribers(event(3).id) == ["a", "b"]

    run(scenario())


def test_quarantined_payloads_are_listed_oldest_first_and_each_kept_apart(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        ids = [await quarantine(store, float(n), b"body %d" % n) for n in range(3)]
        assert len(set(ids)) == 3
        await store.note_quarantine_error(ids[1], "still not JSON")
        listed = await store.quarantined()
        assert [p.id for p in listed] == ids
        assert [p.error for p in listed] == ["not JSON", "still not JSON", "not JSON"]
        assert [p.body for p in listed] == [b"body 0", b"body 1", b"body 2"]
        # An operator gives up on one: gone, once.
        assert await store.drop_quarantined(ids[0]) is True
        assert await store.drop_quarantined(ids[0]) is False
        assert await store.drop_quarantined(10_000) is False
        # A released one is not waiting any more: it cannot be dropped.
        assert await store.release_quarantined(ids[2], [event(1)]) == ["accepted"]
        assert await store.drop_quarantined(ids[2]) is False
        assert [p.id for p in await store.quarantined()] == [ids[1]]

    run(scenario())


def test_releasing_a_payload_whose_event_is_stored_is_a_duplicate(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        assert await store.accept(event(1)) == "accepted"
        quarantine_id = await quarantine(store, 1.0)
        assert await store.release_quarantined(quarantine_id, [event(1)]) == ["duplicate"]
        assert await store.quarantined() == []

    run(scenario())


# A store that cannot take a write says so at once.


def test_a_store_never_opened_is_unavailable(open_test_store: OpenStore, run: Run) -> None:
    async def scenario() -> None:
        store = await open_test_store(opened=False)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.accept(event(1)), ANSWER_SECONDS)

    run(scenario())


def test_a_closed_store_is_unavailable(open_test_store: OpenStore, run: Run) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        assert await store.accept(event(1)) == "accepted"
        await store.ping()
        await asyncio.wait_for(store.close(), ANSWER_SECONDS)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.accept(event(2)), ANSWER_SECONDS)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.ping(), ANSWER_SECONDS)

    run(scenario())


def test_a_closed_store_can_be_opened_again_and_has_kept_everything(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        store = await open_test_store()
        assert await store.accept(event(1)) == "accepted"
        await asyncio.wait_for(store.close(), ANSWER_SECONDS)
        again = await open_test_store()
        assert await again.accept(event(1)) == "duplicate"
        assert (await again.stats())["events"] == 1

    run(scenario())


def test_a_full_ingest_queue_is_unavailable_at_once_and_attempt_records_still_get_in(
    open_test_store: OpenStore,
    run: Run,
    test_database: TestDatabase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database cannot keep up (here: another process holds it): past its bound, ingest
    answers 503 at once rather than piling up, and the dispatcher's attempt records, which
    ingest cannot crowd out (refusing one would send its delivery again), wait their turn."""
    monkeypatch.setattr(test_database.module, "MAX_PENDING_WRITES", 5)

    async def scenario() -> None:
        store = await open_test_store()
        assert await store.accept(event(0)) == "accepted"
        (sending,) = (
            await store.claim_due(
                ClaimRequest(
                    subscriber="a", limit=1, max_in_flight=1, lease_seconds=60, owner="dispatcher"
                )
            )
        ).deliveries
        async with test_database.holding_writes():
            first = asyncio.ensure_future(store.accept(event(1)))
            await asyncio.sleep(0.3)  # the writer took it and waits for the database
            piled = [asyncio.ensure_future(store.accept(event(n))) for n in range(2, 7)]
            await asyncio.sleep(0)
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(store.accept(event(99)), ANSWER_SECONDS)
            record = asyncio.ensure_future(
                store.record_attempt(
                    attempt_of(Delivered(), sending),
                    Delivered(),
                    lease_token=sending.lease_token,
                )
            )
            await asyncio.sleep(0.1)
            assert not record.done()  # queued behind the held writes, not refused
        assert await asyncio.wait_for(record, ANSWER_SECONDS) is True
        outcomes = await asyncio.wait_for(asyncio.gather(first, *piled), ANSWER_SECONDS)
        assert outcomes == ["accepted"] * 6
        assert await store.event_record(event(99).id) is None

    run(scenario())

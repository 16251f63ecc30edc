"""The store's delivery side on a real SQLite file: leases judged by the store's clock, fencing
tokens, heartbeats, and circuits kept by compare-and-set."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.delivery.circuit import CLOSED, CircuitState, after_attempt, encode_circuit
from gateway.delivery.decide import Dead, Decision, Delivered, RetryAt
from gateway.delivery.dispatcher import read_circuit, update_circuit
from gateway.delivery.transport import SendResult
from gateway.store.base import Attempt, ClaimedDelivery, NewEvent
from gateway.store.sqlite import SQLiteStore

START = 1_700_000_000.0


class Clock:
    """The store's clock, moved by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(n: int, subscribers: tuple[str, ...] = ("a",), at: float = START) -> NewEvent:
    return NewEvent(
        id=f"evt_{n:026d}",
        source="s",
        type="payment.succeeded",
        received_at=at,
        body=b'{"n":%d}' % n,
        subscribers=subscribers,
    )


def attempt(claimed: ClaimedDelivery, at: float, outcome: str = "retry") -> Attempt:
    return Attempt(
        delivery_id=claimed.delivery_id,
        started_at=at,
        duration=0.1,
        outcome=outcome,  # type: ignore[arg-type]
        status_code=503 if outcome != "delivered" else 200,
        error="HTTP 503" if outcome != "delivered" else None,
    )


@contextlib.asynccontextmanager
async def opened(path: Path, clock: Clock) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(path, clock=clock)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def claim(store: SQLiteStore, owner: str, lease: float = 30.0) -> list[ClaimedDelivery]:
    return list(await store.claim_due(subscriber="a", limit=10, lease_seconds=lease, owner=owner))


def row(path: Path, delivery_id: int) -> tuple[str, int, float]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        state, attempts, next_at = db.execute(
            "SELECT state, attempts, next_attempt_at FROM deliveries WHERE id = ?", (delivery_id,)
        ).fetchone()
    return str(state), int(attempts), float(next_at)


def attempt_count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0])


# Leases, by the store's clock.


def test_a_lease_keeps_a_delivery_from_a_second_worker_until_it_runs_out(tmp_path: Path) -> None:
    clock = Clock()

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            await store.accept(event(1))
            clock.now += 1
            (first,) = await claim(store, "w1")
            assert await claim(store, "w2") == []
            assert (first.due_at, first.attempts) == (START, 0)
            clock.now += 31  # the first worker died: its lease ran out
            (later,) = await claim(store, "w2")
            assert later.delivery_id == first.delivery_id
            assert later.lease_token != first.lease_token

    asyncio.run(scenario())


def test_nothing_is_claimed_before_it_is_due_by_the_store_s_clock(tmp_path: Path) -> None:
    clock = Clock(START - 10)  # the store's clock is behind the event's time

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            await store.accept(event(1))
            assert await claim(store, "w") == []
            clock.now = START
            assert len(await claim(store, "w")) == 1

    asyncio.run(scenario())


def test_released_leases_are_due_at_once(tmp_path: Path) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            await store.accept(event(1))
            assert len(await claim(store, "w1")) == 1
            await store.release_leases("w1")
            assert len(await claim(store, "w2")) == 1

    asyncio.run(scenario())


# Fencing: an attempt is recorded only under the lease token that holds the delivery.


def test_attempts_move_a_delivery_through_its_states_as_decided(tmp_path: Path) -> None:
    clock = Clock(START + 1)
    path = tmp_path / "gateway.db"

    async def scenario() -> None:
        async with opened(path, clock) as store:
            await store.accept(event(1))
            (claimed,) = await claim(store, "w")
            retry_at = START + 100
            applied = await store.record_attempt(
                attempt(claimed, START + 1), RetryAt(at=retry_at), lease_token=claimed.lease_token
            )
            assert applied is True
            assert row(path, claimed.delivery_id) == ("pending", 1, retry_at)
            assert await store.next_due_at(subscribers=["a"]) == pytest.approx(retry_at)
            assert await store.next_due_at(subscribers=["b"]) is None
            assert await claim(store, "w") == []
            clock.now = retry_at
            (again,) = await claim(store, "w")
            assert (again.attempts, again.due_at) == (1, retry_at)
            applied = await store.record_attempt(
                attempt(again, retry_at, "failed"), Dead(), lease_token=again.lease_token
            )
            assert applied is True
            (dead,) = await store.dead_letter_page(subscriber=None, after=None, limit=10)
            assert (dead.event_id, dead.attempts, dead.last_error) == (
                claimed.event_id,
                2,
                "HTTP 503",
            )

    asyncio.run(scenario())


def test_a_stale_worker_s_record_after_its_lease_was_taken_over_changes_nothing(
    tmp_path: Path,
) -> None:
    clock = Clock(START + 1)
    path = tmp_path / "gateway.db"

    async def scenario() -> None:
        async with opened(path, clock) as store:
            await store.accept(event(1))
            (old,) = await claim(store, "slow", lease=5)
            clock.now += 6  # its lease ran out while it was (supposedly) still sending
            (new,) = await claim(store, "fresh", lease=5)
            before = row(path, old.delivery_id)

            # The slow worker's late answer: a "delivered" would end the delivery early.
            stale = await store.record_attempt(
                attempt(old, START + 1, "delivered"), Delivered(), lease_token=old.lease_token
            )
            assert stale is False
            assert row(path, old.delivery_id) == before == ("pending", 0, START)
            assert attempt_count(path) == 0

            # The holder of the lease records; a second record under the same lease does not.
            fresh = await store.record_attempt(
                attempt(new, clock.now), RetryAt(at=clock.now + 60), lease_token=new.lease_token
            )
            assert fresh is True
            assert row(path, new.delivery_id) == ("pending", 1, clock.now + 60)
            again = await store.record_attempt(
                attempt(new, clock.now, "delivered"), Delivered(), lease_token=new.lease_token
            )
            assert again is False
            assert row(path, new.delivery_id) == ("pending", 1, clock.now + 60)
            assert attempt_count(path) == 1

    asyncio.run(scenario())


def test_a_send_under_way_when_its_delivery_is_replayed_does_not_record(tmp_path: Path) -> None:
    # `gateway replay` of a pending delivery starts a fresh count: the attempt that was already
    # out must not become attempt 1 of it (nor end it as delivered). Replay gives the lease back,
    # and the next claim hands out a new token, so the late record is stale.
    clock = Clock(START + 1)
    path = tmp_path / "gateway.db"

    async def scenario() -> None:
        async with opened(path, clock) as store:
            await store.accept(event(1))
            (sending,) = await claim(store, "worker")
            assert await store.replay(sending.event_id, ["a"], now=clock.now) == 1
            late = await store.record_attempt(
                attempt(sending, clock.now, "delivered"),
                Delivered(),
                lease_token=sending.lease_token,
            )
            assert late is False
            assert row(path, sending.delivery_id) == ("pending", 0, clock.now)
            (replayed,) = await claim(store, "worker")
            assert replayed.lease_token != sending.lease_token

    asyncio.run(scenario())


def test_records_in_one_batch_apply_each_by_its_own_token(tmp_path: Path) -> None:
    """Records waiting together go out in one set-based batch; each applies or not by itself."""
    clock = Clock(START + 1)
    path = tmp_path / "gateway.db"

    async def scenario() -> list[bool]:
        async with opened(path, clock) as store:
            for n in range(6):
                await store.accept(event(n))
            old = await claim(store, "old", lease=5)
            clock.now += 6
            new = await claim(store, "new", lease=5)
            assert [d.delivery_id for d in old] == [d.delivery_id for d in new]
            decision: Decision = Delivered()
            # Even deliveries: the new holder records. Odd: the stale one does.
            records = [
                store.record_attempt(
                    attempt(d, clock.now, "delivered"), decision, lease_token=d.lease_token
                )
                for d in (new[n] if n % 2 == 0 else old[n] for n in range(6))
            ]
            return list(await asyncio.gather(*records))

    applied = asyncio.run(scenario())
    assert applied == [True, False] * 3
    with contextlib.closing(sqlite3.connect(path)) as db:
        states = [r[0] for r in db.execute("SELECT state FROM deliveries ORDER BY id")]
    assert states == ["delivered", "pending"] * 3
    assert attempt_count(path) == 3


# Heartbeats: leases of the silent are given back; the living keep theirs.


def test_leases_of_silent_owners_are_released_and_the_living_keep_theirs(tmp_path: Path) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            await store.accept(event(1))
            await store.accept(event(2))
            await store.heartbeat("dead")
            await store.heartbeat("alive")
            (mine,) = await store.claim_due(subscriber="a", limit=1, lease_seconds=60, owner="dead")
            (theirs,) = await store.claim_due(
                subscriber="a", limit=1, lease_seconds=60, owner="alive"
            )
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

    asyncio.run(scenario())


def test_a_clean_stop_forgets_its_heartbeat(tmp_path: Path) -> None:
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            await store.heartbeat("w")
            await store.release_leases("w")
            clock.now += 60
            assert await store.release_leases_of_silent_owners(5) == []

    asyncio.run(scenario())


# Circuits: compare-and-set.


def test_circuit_saves_compare_and_set_on_the_version(tmp_path: Path) -> None:
    clock = Clock()
    opened_circuit = encode_circuit(CircuitState(state="open", failures=3, open_until=START + 60))
    disabled = encode_circuit(CircuitState(state="disabled", failures=1))

    async def scenario() -> None:
        async with opened(tmp_path / "gateway.db", clock) as store:
            assert await store.subscriber_circuits() == {}
            assert await store.save_subscriber_circuit("a", disabled, expected_version=0)
            # A second "no row yet" loses: someone created it first.
            assert not await store.save_subscriber_circuit("a", opened_circuit, expected_version=0)
            assert await store.subscriber_circuits() == {"a": (1, disabled)}
            assert not await store.save_subscriber_circuit("a", opened_circuit, expected_version=2)
            assert await store.save_subscriber_circuit("a", opened_circuit, expected_version=1)
            assert await store.subscriber_circuits() == {"a": (2, opened_circuit)}
            # `gateway enable`: whatever it was.
            closed = encode_circuit(CLOSED)
            assert await store.save_subscriber_circuit("a", closed, expected_version=None)
            assert await store.save_subscriber_circuit("b", closed, expected_version=None)
            assert await store.subscriber_circuits() == {"a": (3, closed), "b": (1, closed)}

    asyncio.run(scenario())


def test_two_stores_racing_circuit_updates_never_lose_disabled(tmp_path: Path) -> None:
    """Two gateway processes' stores on one database. Each process's updaters start from a
    stale `closed` (version 0) and count failures; one answer in the middle is a 410. However
    the writes interleave, the circuit ends disabled. (One update at a time per process, as
    the dispatcher does.)"""
    clock = Clock()
    failure = SendResult(outcome="retry", status_code=503, error="HTTP 503")
    gone = SendResult(outcome="failed", status_code=410, error="HTTP 410")

    def after(result: SendResult) -> object:
        def change(circuit: CircuitState) -> CircuitState:
            return after_attempt(
                circuit, result, START, started=START, failure_threshold=1000, open_seconds=60
            )

        return change

    async def scenario() -> tuple[int, CircuitState]:
        async with (
            opened(tmp_path / "gateway.db", clock) as first,
            opened(tmp_path / "gateway.db", clock) as second,
        ):
            locks = {id(first): asyncio.Lock(), id(second): asyncio.Lock()}

            async def update(store: SQLiteStore, result: SendResult) -> None:
                async with locks[id(store)]:
                    await update_circuit(store, "a", after(result), (0, CLOSED))  # type: ignore[arg-type]

            await asyncio.gather(
                *(
                    update(store, gone if n == 25 else failure)
                    for n in range(50)
                    for store in (first, second)
                )
            )
            # And one more stale failure after the fact, from a process that saw nothing.
            await update_circuit(first, "a", after(failure), (0, CLOSED))  # type: ignore[arg-type]
            return await read_circuit(second, "a")

    version, circuit = asyncio.run(scenario())
    assert circuit.state == "disabled"
    assert version >= 2


# Upgrading a database an older gateway made.


def test_a_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL,"
            " subscriber TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
            " attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,"
            " next_attempt_at REAL NOT NULL, lease_until REAL, lease_owner TEXT,"
            " last_error TEXT, finished_at REAL, UNIQUE (event_id, subscriber));"
            "CREATE TABLE subscriber_circuits (subscriber TEXT PRIMARY KEY, state BLOB NOT NULL,"
            " updated_at REAL NOT NULL);"
            "INSERT INTO subscriber_circuits VALUES ('a', X'7B7D', 1.0);"
            "PRAGMA user_version=1;"
        )
    clock = Clock(START + 1)

    async def scenario() -> None:
        async with opened(path, clock) as store:
            assert await store.subscriber_circuits() == {"a": (1, b"{}")}
            await store.accept(event(1))
            (claimed,) = await claim(store, "w")
            assert claimed.lease_token == 1

    asyncio.run(scenario())


# Another process reading the database (an operator's sqlite3, the CLI, another worker).


def test_another_process_sees_every_commit_after_the_store_opened_its_reader(
    tmp_path: Path,
) -> None:
    """Opening a second descriptor of the database and closing it drops this process's POSIX
    locks, SQLite's included; another process's connection then deletes the WAL from under the
    store, and later commits are invisible to everyone else. The store must never do that."""
    path = tmp_path / "gateway.db"

    def count_elsewhere() -> int:
        script = (
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
            " print(db.execute('SELECT COUNT(*) FROM events').fetchone()[0]); db.close()"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return int(done.stdout)

    async def scenario() -> list[int]:
        async with opened(path, Clock()) as store:
            await store.accept(event(1))
            await store.stats()  # the reader connection opens
            seen = [count_elsewhere()]
            await store.accept(event(2))
            seen.append(count_elsewhere())
            return seen

    assert asyncio.run(scenario()) == [1, 2]

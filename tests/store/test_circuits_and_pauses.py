"""Subscriber circuits and pauses, shared by every gateway process through the store, on every
backend: circuits are kept by compare-and-set on a version (0: no row yet, None: whatever it
is), and a pause is seen by every store on the database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.delivery.circuit import CLOSED, CircuitState, after_attempt, encode_circuit
from gateway.delivery.dispatcher import read_circuit, update_circuit
from gateway.delivery.transport import SendResult
from gateway.store.base import Store
from tests.store.conftest import OpenStore, Run
from tests.store.support import START, Clock


def test_circuit_saves_compare_and_set_on_the_version(open_test_store: OpenStore, run: Run) -> None:
    opened_circuit = encode_circuit(CircuitState(state="open", failures=3, open_until=START + 60))
    disabled = encode_circuit(CircuitState(state="disabled", failures=1))

    async def scenario() -> None:
        store = await open_test_store(Clock())
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

    run(scenario())


def test_a_circuit_saved_by_one_store_wins_over_a_stale_save_by_another(
    open_test_store: OpenStore, run: Run
) -> None:
    opened_circuit = encode_circuit(CircuitState(state="open", failures=3, open_until=START + 60))

    async def scenario() -> None:
        node_1 = await open_test_store(Clock())
        node_2 = await open_test_store(Clock())
        assert await node_1.save_subscriber_circuit("a", opened_circuit, expected_version=0)
        # node 2 last read "no row" (version 0): it lost, and reads what node 1 saved.
        assert not await node_2.save_subscriber_circuit(
            "a", encode_circuit(CLOSED), expected_version=0
        )
        assert await node_2.subscriber_circuits() == {"a": (1, opened_circuit)}

    run(scenario())


def test_two_stores_racing_circuit_updates_never_lose_disabled(
    open_test_store: OpenStore, run: Run
) -> None:
    """Two gateway processes' stores on one database. Each process's updaters start from a
    stale `closed` (version 0) and count failures; one answer in the middle is a 410. However
    the writes interleave, the circuit ends disabled. (One update at a time per process, as
    the dispatcher does.)"""
    failure = SendResult(outcome="retry", status_code=503, error="HTTP 503")
    gone = SendResult(outcome="failed", status_code=410, error="HTTP 410")

    def after(result: SendResult) -> Callable[[CircuitState], CircuitState]:
        def change(circuit: CircuitState) -> CircuitState:
            return after_attempt(circuit, result, START, failure_threshold=1000, open_seconds=60)

        return change

    async def scenario() -> tuple[int, CircuitState]:
        first = await open_test_store(Clock())
        second = await open_test_store(Clock())
        locks = {id(first): asyncio.Lock(), id(second): asyncio.Lock()}

        async def update(store: Store, result: SendResult) -> None:
            async with locks[id(store)]:
                await update_circuit(store, "a", after(result), (0, CLOSED))

        await asyncio.gather(
            *(
                update(store, gone if n == 25 else failure)
                for n in range(50)
                for store in (first, second)
            )
        )
        # And one more stale failure after the fact, from a process that saw nothing.
        await update_circuit(first, "a", after(failure), (0, CLOSED))
        return await read_circuit(second, "a")

    version, circuit = run(scenario())
    assert circuit.state == "disabled"
    assert version >= 2


def test_a_pause_is_seen_by_every_store_until_it_is_resumed(
    open_test_store: OpenStore, run: Run
) -> None:
    async def scenario() -> None:
        node_1 = await open_test_store(Clock())
        node_2 = await open_test_store(Clock())
        assert await node_2.paused_subscribers() == set()
        await node_1.set_paused("a", True)
        await node_1.set_paused("a", True)  # twice is once
        await node_1.set_paused("b", True)
        assert await node_2.paused_subscribers() == {"a", "b"}
        await node_2.set_paused("a", False)
        await node_2.set_paused("never-paused", False)
        assert await node_1.paused_subscribers() == {"b"}

    run(scenario())

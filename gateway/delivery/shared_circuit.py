"""A subscriber's circuit as every process shares it: read from the store, and changed only by
compare-and-set against the version last seen (gateway/delivery/circuit.py decides; this
writes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from gateway.delivery.circuit import (
    CLOSED,
    CircuitState,
    after_attempt,
    decode_circuit,
    encode_circuit,
)
from gateway.delivery.subscriber_state import SubscriberState
from gateway.delivery.transport import SendResult
from gateway.store.base import Store

__all__ = ["read_circuit", "update_after_attempts", "update_circuit"]

log = structlog.get_logger("gateway.delivery")

# Compare-and-set rounds of one circuit update. Every lost round means another process's write
# went in, and they stop writing once it is disabled, so a 410 gets its turn; the bound is only
# against a broken store.
CIRCUIT_CAS_ROUNDS = 100


async def read_circuit(store: Store, subscriber: str) -> tuple[int, CircuitState]:
    """A subscriber's circuit as the store has it, and its version (0, closed: no row)."""
    stored = (await store.subscriber_circuits()).get(subscriber)
    if stored is None:
        return 0, CLOSED
    version, encoded = stored
    return version, decode_circuit(encoded)


async def update_circuit(
    store: Store,
    subscriber: str,
    change: Callable[[CircuitState], CircuitState],
    known: tuple[int, CircuitState],
) -> tuple[int, CircuitState]:
    """Apply `change` to a subscriber's circuit in the store, by compare-and-set against the
    `known` (version, state): if another process changed it meanwhile, read what it wrote and
    apply `change` to that instead. So a process holding a stale `closed` never overwrites
    another's `disabled` or `open`. What the store holds afterwards, as far as this knows."""
    version, circuit = known
    for _ in range(CIRCUIT_CAS_ROUNDS):
        after = change(circuit)
        if after == circuit:
            return version, circuit
        if await store.save_subscriber_circuit(
            subscriber, encode_circuit(after), expected_version=version
        ):
            return version + 1, after
        version, circuit = await read_circuit(store, subscriber)
    return version, circuit


async def update_after_attempts(
    store: Store,
    subscriber: SubscriberState,
    answers: Sequence[tuple[SendResult, float]],
    probe: str | None,
) -> None:
    """The subscriber's circuit after attempts' answers (each a result and when it came, in
    order: `after_attempt` over them), written to the store by compare-and-set and adopted, once
    for a whole batch; a change of state logged. `probe`: the mark of the circuit's probe when
    these attempts were it (a probe is a batch of one). Nothing changed (a closed circuit's
    deliveries, the usual case): no store write (`update_circuit`)."""
    # The states `change` was applied to: the last is the store's, the one this update
    # changed (this process's own may be stale: another opened the circuit meanwhile).
    seen: list[CircuitState] = []

    def change(circuit: CircuitState) -> CircuitState:
        seen.append(circuit)
        for result, now in answers:
            circuit = after_attempt(
                circuit,
                result,
                now,
                probe=probe,
                failure_threshold=subscriber.config.circuit_breaker_failures,
                open_seconds=subscriber.config.circuit_breaker_seconds,
            )
        return circuit

    if not answers:
        return
    async with subscriber.circuit_lock:
        version, after = await update_circuit(
            store,
            subscriber.config.name,
            change,
            (subscriber.circuit_version, subscriber.circuit),
        )
        subscriber.adopt_circuit(version, after)
    before = seen[-1]
    # A failed probe re-opens an open circuit (for longer): a new pause, logged as one.
    reopened = before.state == after.state == "open" and after.failures > before.failures
    if after.state != before.state or reopened:
        log.warning(
            "circuit_" + after.state,
            subscriber=subscriber.config.name,
            failures=after.failures,
            open_until=after.open_until or None,
            open_seconds=after.open_seconds or None,
        )

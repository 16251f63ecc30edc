"""Subscribers as an operator sees them (state, backlog, dead letters), and pausing them.

A pause lives in the store, so every gateway process honours it: their dispatchers read it with
the circuits and claim nothing for a paused subscriber (its deliveries stay pending and spend no
attempt) until it is resumed.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from gateway.config import GatewayConfig
from gateway.delivery.circuit import CLOSED, CircuitState, decode_circuit, encode_circuit
from gateway.operations.errors import UnknownSubscriber
from gateway.store.base import Store

__all__ = [
    "SubscriberState",
    "SubscriberStatus",
    "enable",
    "list_subscribers",
    "pause",
    "resume",
    "subscriber_state",
]

SubscriberState = Literal["active", "open", "disabled", "paused"]


class SubscriberStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: str
    state: SubscriberState
    # Pending deliveries (those held behind an earlier one of their subject included).
    pending: int
    oldest_pending_seconds: float | None
    dead: int


def subscriber_state(circuit: CircuitState, *, paused: bool) -> SubscriberState:
    """An operator's pause says the most (it is theirs to lift), then a 410's disabling, then
    an open circuit."""
    if paused:
        return "paused"
    if circuit.state == "disabled":
        return "disabled"
    if circuit.state == "open":
        return "open"
    return "active"


async def list_subscribers(store: Store, config: GatewayConfig) -> list[SubscriberStatus]:
    """Every configured subscriber, by name."""
    circuits = await store.subscriber_circuits()
    paused = await store.paused_subscribers()
    backlog = await store.delivery_backlog()
    dead = await store.dead_counts()
    now = time.time()
    statuses = []
    for name in sorted(config.subscribers):
        stored = circuits.get(name)
        circuit = CLOSED if stored is None else decode_circuit(stored[1])
        waiting = backlog.get(name)
        statuses.append(
            SubscriberStatus(
                name=name,
                kind=config.subscribers[name].kind,
                state=subscriber_state(circuit, paused=name in paused),
                pending=0 if waiting is None else waiting.count,
                oldest_pending_seconds=(
                    None if waiting is None else max(0.0, now - waiting.oldest_created_at)
                ),
                dead=dead.get(name, 0),
            )
        )
    return statuses


async def _status_of(store: Store, config: GatewayConfig, name: str) -> SubscriberStatus:
    return next(s for s in await list_subscribers(store, config) if s.name == name)


def _check_known(config: GatewayConfig, name: str) -> None:
    if name not in config.subscribers:
        raise UnknownSubscriber(name)


async def pause(store: Store, config: GatewayConfig, name: str) -> SubscriberStatus:
    """Hold every delivery to `name` pending, in every process, until `resume`."""
    _check_known(config, name)
    await store.set_paused(name, True)
    return await _status_of(store, config, name)


async def enable(store: Store, config: GatewayConfig, name: str) -> None:
    """Close the circuit of `name` now: re-enable one disabled by a 410 Gone, or end an open
    circuit's wait (`gateway enable`)."""
    _check_known(config, name)
    await store.save_subscriber_circuit(name, encode_circuit(CLOSED), expected_version=None)


async def resume(store: Store, config: GatewayConfig, name: str) -> SubscriberStatus:
    """Lift a pause, and re-enable a subscriber a 410 disabled (an operator's resume means
    "send to it again"); an open circuit keeps its own schedule."""
    _check_known(config, name)
    await store.set_paused(name, False)
    stored = (await store.subscriber_circuits()).get(name)
    if stored is not None and decode_circuit(stored[1]).state == "disabled":
        await enable(store, config, name)
    return await _status_of(store, config, name)

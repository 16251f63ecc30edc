"""The circuit breaker: a subscriber that keeps failing is paused and probed, not hammered.

A pure state machine; the dispatcher keeps each subscriber's state in the store, so every
gateway process sees the same one and a restart does not forget that a subscriber is down.

- closed: deliveries flow; failed attempts in a row are counted.
- open: after `circuit_breaker_failures` failures in a row nothing is sent until `open_until`;
  then one delivery goes out as a probe, one across every process: the process that takes it
  first moves `open_until` to the end of the probe's lease (`take_probe`, by compare-and-set in
  the store), so every other process still finds the circuit open. Its success closes the
  circuit, its failure re-opens it for twice as long (at most an hour), so a subscriber down
  for a day is asked a few dozen times, not tens of thousands.
- disabled: the subscriber answered 410 Gone, which the Standard Webhooks spec reads as "stop
  sending". Only an operator re-enables it (`gateway enable NAME`).
Deliveries held back while a circuit is open or disabled stay pending: they cost no attempt.

The store keeps each state as the bytes `encode_circuit` makes, with a version it compares and
sets (gateway/delivery/dispatcher.py), so no process overwrites a state it has not seen.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.delivery.transport import SendResult

__all__ = [
    "CLOSED",
    "CircuitState",
    "after_attempt",
    "decode_circuit",
    "encode_circuit",
    "give_back_probe",
    "may_send",
    "take_probe",
]

MAX_OPEN_SECONDS = 3600.0
GONE = 410


class CircuitState(msgspec.Struct, frozen=True, kw_only=True):
    state: Literal["closed", "open", "disabled"] = "closed"
    failures: int = 0
    opened_at: float = 0.0
    open_until: float = 0.0
    open_seconds: float = 0.0


CLOSED = CircuitState()

_decoder = msgspec.json.Decoder(CircuitState)


def encode_circuit(circuit: CircuitState) -> bytes:
    """The bytes the store keeps for a circuit."""
    return msgspec.json.encode(circuit)


def decode_circuit(encoded: bytes) -> CircuitState:
    return _decoder.decode(encoded)


def may_send(circuit: CircuitState, now: float) -> Literal["yes", "probe", "no"]:
    """Whether deliveries may go to this subscriber now: freely, one probe, or not at all."""
    if circuit.state == "closed":
        return "yes"
    if circuit.state == "open" and now >= circuit.open_until:
        return "probe"
    return "no"


def take_probe(circuit: CircuitState, now: float, hold_seconds: float) -> CircuitState | None:
    """The state that reserves the probe for one process until `now + hold_seconds` (its
    lease: a process that dies holding it delays the next probe by that much, no more); None
    when no probe is due. The probe's answer then closes or re-opens the circuit as usual."""
    if may_send(circuit, now) != "probe":
        return None
    return msgspec.structs.replace(circuit, open_until=now + hold_seconds)


def give_back_probe(circuit: CircuitState, now: float) -> CircuitState:
    """A reserved probe not sent (nothing was due): due again at once, for any process."""
    return msgspec.structs.replace(circuit, open_until=min(circuit.open_until, now))


def after_attempt(
    circuit: CircuitState,
    result: SendResult,
    now: float,
    *,
    started: float,
    failure_threshold: int,
    open_seconds: float,
) -> CircuitState:
    """The state after an attempt, started at `started`, answered with `result` at `now`.
    `failure_threshold` 0 never opens the circuit."""
    if circuit.state == "disabled":
        return circuit  # answers still in flight when it was disabled change nothing
    if result.status_code == GONE:
        return CircuitState(state="disabled", failures=circuit.failures + 1)
    if result.outcome == "delivered":
        return CLOSED
    if not failure_threshold and circuit.state == "closed":
        # It never opens: counting failures would only cost a store write per failed attempt.
        return circuit
    failures = circuit.failures + 1
    if circuit.state == "open":
        if started < circuit.opened_at:
            # Sent before the circuit opened (up to max_in_flight of them): not the probe, and
            # no news either; only the probe's failure may lengthen the pause.
            return circuit
        pause = min(max(circuit.open_seconds, open_seconds) * 2, MAX_OPEN_SECONDS)
        return _opened(failures, now, pause)
    if failure_threshold and failures >= failure_threshold:
        return _opened(failures, now, open_seconds)
    return CircuitState(state=circuit.state, failures=failures)


def _opened(failures: int, now: float, pause: float) -> CircuitState:
    return CircuitState(
        state="open", failures=failures, opened_at=now, open_until=now + pause, open_seconds=pause
    )

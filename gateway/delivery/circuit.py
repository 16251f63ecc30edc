"""The circuit breaker: a subscriber that is down is paused and probed, not hammered.

A pure state machine; the dispatcher keeps each subscriber's state in the store, so every
gateway process sees the same one and a restart does not forget that a subscriber is down.

- closed: deliveries flow; failures in a row that say the subscriber is unhealthy are counted:
  those worth retrying (timeouts, connection errors, 408, 425, 429, 5xx: `worth_retrying`, the
  retry policy's own test). Any other answer (400, 401, 404, 422...) is the subscriber's
  verdict on that one message, a dead letter at once: it neither counts nor breaks the run, so
  a subscriber rejecting one kind of event never has its other deliveries paused.
- open: after `circuit_breaker_failures` such failures in a row nothing is sent until
  `open_until`; then one delivery goes out as a probe, one across every process: the process
  that takes it first stores the probe's mark and moves `open_until` to the end of the probe's
  lease (`take_probe`, by compare-and-set in the store), so every other process still finds
  the circuit open. Its success closes the circuit, its failure re-opens it for twice as long
  (at most an hour), so a subscriber down for a day is asked a few dozen times, not tens of
  thousands. Only the attempt carrying the mark is the probe: the failure of any other send
  while open (one that left before the circuit opened, or from a process that had not seen it
  open yet) is no news and changes nothing. No clock of one process is compared with another's.
  A success, the probe's or any other, closes it: the subscriber is evidently up. A probe
  answered with a verdict on its one message (a 400) says neither: the next probe goes at once.
  A probe never answered (its process died) is another process's to take once its lease ends.
- disabled: the subscriber answered 410 Gone, which the Standard Webhooks spec reads as "stop
  sending". Only an operator re-enables it (`gateway enable NAME`).
Deliveries held back while a circuit is open or disabled stay pending: they cost no attempt.

The store keeps each state as the bytes `encode_circuit` makes, with a version it compares and
sets (gateway/delivery/dispatcher.py), so no process overwrites a state it has not seen.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.delivery.retry import worth_retrying
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
    open_until: float = 0.0
    open_seconds: float = 0.0
    # The mark of the probe out now (`take_probe`): only its answer may re-open the circuit.
    probe: str | None = None


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


def take_probe(
    circuit: CircuitState, now: float, hold_seconds: float, mark: str
) -> CircuitState | None:
    """The state that reserves the probe, marked `mark` (unique to this probe: the attempt that
    is the probe carries it), for one process until `now + hold_seconds` (its lease: a process
    that dies holding it delays the next probe by that much, no more, and its answer, should
    one still come, is then no probe's); None when no probe is due."""
    if may_send(circuit, now) != "probe":
        return None
    return msgspec.structs.replace(circuit, open_until=now + hold_seconds, probe=mark)


def give_back_probe(circuit: CircuitState, now: float, mark: str) -> CircuitState:
    """The probe marked `mark` is over without news (nothing was due to send, or the subscriber
    judged the one message): the next one is due at once, for any process. Unchanged when the
    probe out is another (this one's reservation ran out and someone probed since)."""
    if circuit.state != "open" or circuit.probe != mark:
        return circuit
    return msgspec.structs.replace(circuit, open_until=min(circuit.open_until, now), probe=None)


def after_attempt(
    circuit: CircuitState,
    result: SendResult,
    now: float,
    *,
    probe: str | None = None,
    failure_threshold: int,
    open_seconds: float,
) -> CircuitState:
    """The state after an attempt answered `result` at `now`; `probe` is the mark the attempt
    carries when it went out as the circuit's probe (None: an ordinary send).
    `failure_threshold` 0 never opens the circuit."""
    if circuit.state == "disabled":
        return circuit  # answers still in flight when it was disabled change nothing
    if result.status_code == GONE:
        return CircuitState(state="disabled", failures=circuit.failures + 1)
    if result.outcome == "delivered":
        return CLOSED
    if not worth_retrying(result):
        # The subscriber's verdict on this one message, not on its health: no change. A probe
        # so answered is over all the same, neither failed nor succeeded: the next goes now.
        return circuit if probe is None else give_back_probe(circuit, now, probe)
    if circuit.state == "open":
        if probe is None or probe != circuit.probe:
            return circuit  # not the probe: no news, whenever and wherever it was sent
        pause = min(max(circuit.open_seconds, open_seconds) * 2, MAX_OPEN_SECONDS)
        return _opened(circuit.failures + 1, now, pause)
    if not failure_threshold:
        # It never opens: counting failures would only cost a store write per failed attempt.
        return circuit
    failures = circuit.failures + 1
    if failures >= failure_threshold:
        return _opened(failures, now, open_seconds)
    return CircuitState(failures=failures)


def _opened(failures: int, now: float, pause: float) -> CircuitState:
    return CircuitState(state="open", failures=failures, open_until=now + pause, open_seconds=pause)

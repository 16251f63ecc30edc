"""What a dispatcher holds per subscriber: its transport, keys and retry policy, its circuit as
last read from the store, and its free slots (gateway/delivery/dispatcher.py)."""

from __future__ import annotations

import asyncio

from gateway.config import SubscriberConfig
from gateway.delivery.circuit import CLOSED, CircuitState, may_send
from gateway.delivery.retry import RetryPolicy
from gateway.delivery.transport import Transport
from gateway.signing import SigningKeys

__all__ = ["SubscriberState", "lease_seconds"]


def lease_seconds(timeout_seconds: float) -> float:
    """A lease outlives any attempt by construction: an attempt is cut off at timeout_seconds
    (`Dispatcher._send`), so a worker still holding its lease may still be sending, and a lease
    that ran out means the attempt is over. The margin covers recording it. Short enough that a
    crashed worker's deliveries are soon taken up by another (docs/reference/nodes.md)."""
    return 3 * timeout_seconds + 5


class SubscriberState:
    """What the dispatcher holds per subscriber: transport, keys, policy, circuit (and the
    version the store had it at), free slots."""

    def __init__(self, config: SubscriberConfig, transport: Transport) -> None:
        self.config = config
        self.transport = transport
        self.keys = SigningKeys(config.secrets)
        self.policy = RetryPolicy(config.retry_schedule)
        self.lease_seconds = lease_seconds(config.timeout_seconds)
        self.circuit: CircuitState = CLOSED
        self.circuit_version = 0
        # One circuit update at a time per process: concurrent answers would only make each
        # other's compare-and-set fail.
        self.circuit_lock = asyncio.Lock()
        self.in_flight = 0
        # Sends to it this process has finished: each one freed a slot.
        self.sends_ended = 0
        # The store found all its slots taken, by this process and others (`Claim.full`), when
        # `sends_ended` was `full_as_of`: nothing is claimed for it until one of this process's
        # sends to it ends, or `full_until` (a poll later) for the case another process's did.
        # Claiming again at once would only spin: `next_due_at` says "due now" all along. The
        # process whose send freed a slot is woken by that send and takes the slot itself.
        self.full_as_of = -1
        self.full_until = float("-inf")
        # An operator's pause (the store's, read with the circuits): nothing is claimed.
        self.paused = False
        # The mark of the circuit's one probe when this process holds it (`take_probe`): it may
        # claim one delivery, which goes out as the probe, carrying the mark.
        self.probe_held: str | None = None

    def adopt_circuit(self, version: int, circuit: CircuitState) -> None:
        """Take a circuit state the store had at `version`, unless a newer one is known."""
        if version >= self.circuit_version:
            self.circuit_version, self.circuit = version, circuit

    def free_slots(self, now: float) -> int:
        if self.paused:
            return 0
        if self.probe_held:
            return 1 if self.in_flight == 0 else 0
        if may_send(self.circuit, now) != "yes":
            return 0  # open, or a probe this process has not taken (`Dispatcher._take_probes`)
        if self.is_full(now):
            return 0
        return self.config.max_in_flight - self.in_flight

    def is_full(self, now: float) -> bool:
        return self.full_as_of == self.sends_ended and now < self.full_until

"""A circuit breaker is one state for every node (docs/reference/nodes.md): once a failing
subscriber's circuit opens, no node sends to it until the pause ends, and then one probe goes out
across all nodes, not one per node.

The probe is taken by compare-and-set on the shared circuit (gateway/delivery/circuit.py
`take_probe`): before it was, each process let its own probe through, and two nodes sent two.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.delivery.subscriber import Subscriber, always
from tests.nodes.cluster import SOON, Cluster, ledger, new_body, node_config, post

NODES = 2
FAILURES = 3  # circuit_breaker_failures
PAUSE = 3.0  # circuit_breaker_seconds
# A node reads the shared circuit states about once a second (the dispatcher's poll): after
# this, every node has seen the circuit open.
SETTLE = 1.5


def test_once_the_circuit_opens_no_node_sends_and_one_probe_goes_out_for_all(
    start_cluster: Callable[..., Cluster], postgres_url: str, subscriber: Subscriber, secret: str
) -> None:
    subscriber.script = always(503)
    block = ledger(
        subscriber.url,
        secret,
        timeout_seconds=2,
        # Long enough that no retry comes due during the test: every request is a first
        # attempt or the probe.
        retry_schedule=[60],
        circuit_breaker_failures=FAILURES,
        circuit_breaker_seconds=PAUSE,
    )
    cluster = start_cluster([node_config(postgres_url, block)] * NODES)

    with httpx.Client() as client:
        for number in range(FAILURES):  # failures on every node, one after the other
            assert post(client, cluster[number % NODES], new_body()).status_code == 200
            subscriber.wait_for_count(number + 1, SOON)
        opened_about = subscriber.received[-1].arrived  # the answer to this one opens it
        time.sleep(SETTLE)
        for number in range(4 * NODES):  # new events on every node while the circuit is open
            assert post(client, cluster[number % NODES], new_body()).status_code == 200

    quiet_until = opened_about + PAUSE - 0.3
    while time.monotonic() < quiet_until:
        assert subscriber.count == FAILURES, "a node sent while the circuit was open"
        time.sleep(0.05)
    subscriber.wait_for_count(FAILURES + 1, PAUSE + SOON)
    probe = subscriber.received[FAILURES]
    # The probe failed (503): the pause is now twice as long, and nobody else probed meanwhile.
    time.sleep(2 * SETTLE)
    after = subscriber.received[FAILURES:]
    print(
        f"circuit opened at +0.00 s, probe at +{probe.arrived - opened_about:.2f} s; requests"
        f" after it: {[round(r.arrived - opened_about, 2) for r in after]}"
    )
    assert probe.arrived >= opened_about + PAUSE - 0.05
    assert len(after) == 1, f"{len(after)} probes at once across {NODES} nodes"

"""`max_in_flight` is the whole gateway's (docs/reference/nodes.md): two nodes on one PostgreSQL
database, each posted half of a backlog for one slow subscriber, together have at most that many
sends to it under way, not that many each. Each node's HTTP pool holds `max_in_flight` connections,
so only the store's claim (which counts every node's live leases) keeps the peak at the bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.delivery.subscriber import Subscriber, always
from tests.nodes.cluster import SOON, Cluster, ledger, new_body, node_config, post

NODES = 2
MAX_IN_FLIGHT = 4
EVENTS = 40
REPLY_SECONDS = 0.3


def test_two_nodes_send_a_backlog_exactly_max_in_flight_at_a_time(
    start_cluster: Callable[..., Cluster], postgres_url: str, subscriber: Subscriber, secret: str
) -> None:
    subscriber.script = always(200, delay=REPLY_SECONDS)
    block = ledger(subscriber.url, secret, max_in_flight=MAX_IN_FLIGHT, timeout_seconds=10)
    # One process per node: the nodes are what this test is about.
    cluster = start_cluster([node_config(postgres_url, block)] * NODES, ["--workers", "1"])

    with httpx.Client() as client:
        for number in range(EVENTS):
            response = post(client, cluster[number % NODES], new_body())
            assert response.status_code == 200, response.text
    deadline = time.monotonic() + SOON
    while subscriber.count < EVENTS:
        assert time.monotonic() < deadline, f"{subscriber.count} of {EVENTS} sent in {SOON} s"
        time.sleep(0.05)

    print(f"peak {subscriber.max_in_flight} requests at once from {NODES} nodes")
    assert subscriber.duplicates() == 0
    # Reached, not only respected: the backlog keeps every slot busy.
    assert subscriber.max_in_flight == MAX_IN_FLIGHT, f"peak {subscriber.max_in_flight}"

"""An `ingest` node and a `deliver` node on one PostgreSQL database (docs/reference/nodes.md,
server.role): what the first accepts, the second sends, woken by the store's LISTEN/NOTIFY rather
than its poll; the first sends nothing, the second takes no webhooks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import httpx

from tests.delivery.subscriber import Subscriber
from tests.nodes.cluster import (
    SOON,
    Cluster,
    attempts_by,
    delivered_by,
    ledger,
    missing,
    new_body,
    node_config,
    post,
    wait_until,
)

# The dispatcher polls its store once a second (gateway/delivery/dispatcher.py POLL_SECONDS):
# found by the poll alone, events posted at random moments would wait 0.5 s on average. A
# median well below that shows the deliver node was woken by the ingest node's commits.
WOKEN_MEDIAN_SECONDS = 0.3


def test_an_ingest_node_stores_and_a_deliver_node_sends(
    start_cluster: Callable[..., Cluster], postgres_url: str, subscriber: Subscriber, secret: str
) -> None:
    block = ledger(subscriber.url, secret, timeout_seconds=2)
    cluster = start_cluster(
        [
            node_config(postgres_url, block, role="ingest"),
            node_config(postgres_url, block, role="deliver"),
        ]
    )
    ingest, deliver = cluster[0], cluster[1]

    with httpx.Client() as client:
        refused = post(client, deliver, new_body())
        assert refused.status_code == 404
        assert refused.json() == {"error": "not_found"}

        acknowledged_at: dict[str, float] = {}
        for _ in range(40):
            response = post(client, ingest, new_body())
            assert response.json()["status"] == "accepted"
            acknowledged_at[response.json()["id"]] = time.monotonic()
            time.sleep(0.025)  # spread over a second: each lands somewhere in a poll interval
    wait_until(
        lambda: not missing(acknowledged_at, subscriber.answered_ok()), SOON, "all 40 delivered"
    )
    waits = [
        subscriber.for_id(event_id)[0].arrived - answered
        for event_id, answered in acknowledged_at.items()
    ]
    print(
        f"ingest -> deliver node: median {statistics.median(waits) * 1000:.0f} ms, max"
        f" {max(waits) * 1000:.0f} ms from the ingest node's 200 to the subscriber"
    )
    assert statistics.median(waits) < WOKEN_MEDIAN_SECONDS
    assert delivered_by(deliver) == 40
    assert attempts_by(ingest) == 0  # not one attempt, of any outcome: it sends nothing
    assert subscriber.duplicates() == 0

"""PostgreSQL stopped under load (docs/reference/nodes.md): two nodes answer 503 while it is down,
never a 200 for an event they could not commit, and both ingest and delivery come back by themselves
once it is up again, with no node restarted.

This test stops the database, so it runs its own PostgresServer (tests/postgres_server.py),
never the cluster the other tests share.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.delivery.subscriber import Subscriber
from tests.nodes.cluster import (
    SOON,
    Cluster,
    Ledger,
    ledger,
    missing,
    new_body,
    node_config,
    post,
    run_load,
    wait_until,
)
from tests.postgres_server import PostgresServer
from tests.service.harness import GatewayProcess

# "Within seconds of it being back": the store reconnects on its own.
RECOVERY_SECONDS = 10.0
# With the database down, a webhook must get its 503 sooner than a provider gives up waiting
# (many wait 10 to 30 s): a 503 within this is an answer, a hang is not.
UNAVAILABLE_WITHIN = 10.0


def _first_200(client: httpx.Client, node: GatewayProcess, answers: Ledger) -> float:
    """Post new events to one node until one is accepted; the seconds that took."""
    began = time.monotonic()
    while time.monotonic() - began < RECOVERY_SECONDS + 5:
        try:
            response = post(client, node, new_body())
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            with answers.lock:
                answers.accepted.append(response.json()["id"])
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError("a node did not take webhooks again after PostgreSQL came back")


def test_postgresql_stopped_under_load_gives_503_and_both_sides_recover_by_themselves(
    start_cluster: Callable[..., Cluster], subscriber: Subscriber, secret: str
) -> None:
    server = PostgresServer().start()
    cluster: Cluster | None = None
    try:
        url = server.create_database()
        cluster = start_cluster(
            [node_config(url, ledger(subscriber.url, secret, timeout_seconds=2))] * 2
        )
        nodes = cluster.nodes
        answers = Ledger()
        moments: dict[str, float] = {}
        readiness: list[int] = []
        recovery: list[float] = []

        def outage() -> None:
            time.sleep(1.0)
            server.stop()  # fast shutdown: every connection of both nodes is cut
            moments["down"] = time.monotonic()
            time.sleep(1.0)
            readiness.extend(
                httpx.get(f"{node.base_url}/readyz", timeout=10).status_code for node in nodes
            )
            # Down until the providers have had 503s (a webhook may first wait a moment for a
            # connection), but never longer than a provider would wait for an answer.
            wait_until(
                lambda: any(
                    status == 503 and at > moments["down"] for at, status in answers.statuses
                ),
                UNAVAILABLE_WITHIN,
                "a 503 while PostgreSQL was down",
            )
            time.sleep(0.5)
            moments["restart"] = time.monotonic()
            server.start()
            moments["up"] = time.monotonic()
            with httpx.Client() as client:
                for node in nodes:
                    recovery.append(_first_200(client, node, answers))

        # 300 events over 4 s from 4 threads; a provider retries a 503 (every 50 ms, 400 times).
        bodies = [new_body() for _ in range(300)]
        run_load(nodes, bodies, threads=4, rate=75, ledger=answers, during=outage, tries=400)

        assert readiness == [503, 503], "/readyz must say the store is unreachable"
        during = [
            status
            for at, status in answers.statuses
            if moments["down"] + 0.5 < at < moments["restart"]
        ]
        assert 503 in during
        assert 200 not in during, "a 200 while the database was down: not committed"
        assert answers.never_answered == 0
        assert not answers.unexpected
        acknowledged = answers.acknowledged
        took = wait_until(
            lambda: not missing(acknowledged, subscriber.answered_ok()),
            SOON,
            "every event answered 200 delivered after the database came back",
        )
        print(
            f"posted {answers.posted}, acknowledged {len(acknowledged)}, 503 answers"
            f" {answers.unavailable}, connection errors {answers.unreachable}; after the restart"
            f" ingest answered 200 again in {', '.join(f'{s:.2f}' for s in recovery)} s per node,"
            f" everything delivered {took:.1f} s after the load ended, duplicate deliveries"
            f" {subscriber.duplicates()}"
        )
        assert all(seconds < RECOVERY_SECONDS for seconds in recovery)
    finally:
        if cluster is not None:
            cluster.stop()  # before the database goes for good: a clean stop, no waiting on it
        server.shutdown()

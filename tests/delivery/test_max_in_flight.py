"""`max_in_flight`: under a backlog a subscriber gets exactly that many requests at once, and the
gateway holds no more than that many of its deliveries at a time (README: Delivery, Bounded),
whether one process sends them or several (`serve --workers 3`): the bound is the whole
gateway's, counted by the store's claim (docs/reference/nodes.md, processes.md).

The HTTP client's pool alone would keep one process's peak at the bound even if the dispatcher
claimed without one; the leases in the store show what the dispatchers took. Each process has
a pool of its own, so with three of them only the store's count keeps the subscriber's peak at
the bound.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.delivery.subscriber import Subscriber, always, new_hmac_secret
from tests.delivery.test_delivery import SOON, config, post_many, subscriber_toml
from tests.service.harness import GatewayProcess

MAX_IN_FLIGHT = 4
EVENTS = 40
REPLY_SECONDS = 0.3


def drain(tmp_path: Path, workers: int = 1) -> tuple[Subscriber, int, set[str]]:
    """A backlog of EVENTS posted to a gateway of `workers` processes whose subscriber answers
    in REPLY_SECONDS, sent: the subscriber, the most deliveries leased at once while it
    drained, and the processes (pids) that held those leases."""
    secret = new_hmac_secret()
    server = Subscriber([secret], script=always(200, delay=REPLY_SECONDS)).start()
    gateway = GatewayProcess(
        tmp_path,
        config(
            subscriber_toml(
                "ledger", server.url, [secret], max_in_flight=MAX_IN_FLIGHT, timeout_seconds=10
            ),
            routed=["ledger"],
        ),
        serve_args=["--workers", str(workers)],
    )
    most_leased = 0
    holders: set[str] = set()
    try:
        gateway.start()
        # Every worker's dispatcher running before the backlog comes (the first one ready
        # answers /readyz), and the posts spread over the workers.
        deadline = time.monotonic() + SOON
        while gateway.logs().count('"event":"started"') < workers:
            assert time.monotonic() < deadline, "the workers did not all start"
            time.sleep(0.05)
        ids = post_many(gateway, EVENTS)
        assert len(set(ids)) == EVENTS
        deadline = time.monotonic() + SOON
        while server.count < EVENTS:
            assert time.monotonic() < deadline, f"{server.count} of {EVENTS} sent in {SOON} s"
            # SQLite only: no read of the store interface tells whether a lease is held now.
            leases = gateway.sqlite_query(
                "SELECT lease_owner FROM deliveries"
                " WHERE state = 'pending' AND lease_until IS NOT NULL"
            )
            most_leased = max(most_leased, len(leases))
            # An owner is `host:pid:token`.
            holders |= {str(owner).split(":")[1] for (owner,) in leases}
            time.sleep(0.02)
    finally:
        gateway.stop()
        server.stop()
        print(f"--- gateway log ---\n{gateway.logs()[-6000:]}")  # shown when the test failed
    return server, most_leased, holders


def test_a_backlog_is_sent_exactly_max_in_flight_at_a_time(tmp_path: Path) -> None:
    server, most_leased, _ = drain(tmp_path)
    assert server.duplicates() == 0
    assert most_leased <= MAX_IN_FLIGHT, f"{most_leased} deliveries leased at once"
    # The bound is reached, not only respected: a backlog keeps every slot busy.
    assert server.max_in_flight == MAX_IN_FLIGHT, f"peak {server.max_in_flight}"


def test_three_processes_send_a_backlog_exactly_max_in_flight_at_a_time(tmp_path: Path) -> None:
    """Three workers, each receiving and delivering, on one SQLite file: their sends to the
    subscriber together stay within its `max_in_flight`, not within it each (3x)."""
    server, most_leased, holders = drain(tmp_path, workers=3)
    print(f"leases held by processes {sorted(holders)}; peak {server.max_in_flight}")
    assert server.duplicates() == 0
    assert most_leased <= MAX_IN_FLIGHT, f"{most_leased} deliveries leased at once"
    assert server.max_in_flight == MAX_IN_FLIGHT, f"peak {server.max_in_flight}"

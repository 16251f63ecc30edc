"""`max_in_flight`: under a backlog a subscriber gets exactly that many requests at once, and the
gateway holds no more than that many of its deliveries at a time (README: Delivery, Bounded).

The HTTP client's pool alone would keep the subscriber's peak at the bound even if the
dispatcher claimed without one; the leases in the store show what the dispatcher took.
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


def test_a_backlog_is_sent_exactly_max_in_flight_at_a_time(tmp_path: Path) -> None:
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
    )
    try:
        gateway.start()
        ids = post_many(gateway, EVENTS)
        assert len(set(ids)) == EVENTS
        # While the backlog drains: never more leased (taken by the dispatcher) than the bound.
        most_leased = 0
        deadline = time.monotonic() + SOON
        while server.count < EVENTS:
            assert time.monotonic() < deadline, f"{server.count} of {EVENTS} sent in {SOON} s"
            # SQLite only: no read of the store interface tells whether a lease is held now.
            ((leased,),) = gateway.sqlite_query(
                "SELECT COUNT(*) FROM deliveries"
                " WHERE state = 'pending' AND lease_until IS NOT NULL"
            )
            assert isinstance(leased, int)
            most_leased = max(most_leased, leased)
            time.sleep(0.02)
    finally:
        gateway.stop()
        server.stop()
    assert server.duplicates() == 0
    assert most_leased <= MAX_IN_FLIGHT, f"{most_leased} deliveries leased at once"
    # The bound is reached, not only respected: a backlog keeps every slot busy.
    assert server.max_in_flight == MAX_IN_FLIGHT, f"peak {server.max_in_flight}"

"""A pause is the store's: two `gateway serve` processes on one SQLite store, paused through
one, and neither delivers (deliveries stay pending, no attempt spent); resumed through the
other, and they flow (docs/reference/admin.md)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.admin.support import ADMIN_CONFIG, api, post_finchpay, wait_for
from tests.service.harness import GatewayProcess


def test_a_pause_through_one_process_holds_the_other(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    config = ADMIN_CONFIG.replace(
        'url = "sqlite:///./data/gateway.db"', f'url = "sqlite:///{shared}/gateway.db"'
    ).replace('path = "./data/events.jsonl"', f'path = "{shared}/events.jsonl"')
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = GatewayProcess(tmp_path / "one", config).start()
    two = GatewayProcess(tmp_path / "two", config).start()
    delivered = shared / "events.jsonl"

    def deliveries_by_state_and_attempts() -> dict[tuple[str, int], int]:
        records = one.event_records().values()
        return Counter(
            (delivery.state, len(delivery.attempts))
            for record in records
            for delivery in record.deliveries
        )

    def deliveries_by_state() -> dict[str, int]:
        stats = one.stats()
        return {
            state: stats[state]
            for state in ("pending", "held", "delivered", "dead")
            if stats[state]
        }

    def lines() -> int:
        return len(delivered.read_bytes().splitlines()) if delivered.exists() else 0

    try:
        post_finchpay(two, "pay_before")
        wait_for(lambda: lines() == 1)

        assert api(one, "POST", "/subscribers/audit/pause").json()["state"] == "paused"
        time.sleep(1.5)  # both dispatchers re-read pauses within their poll interval (1 s)
        for number in range(5):
            post_finchpay(two, f"pay_paused_{number}")
        time.sleep(2.5)
        assert lines() == 1
        assert deliveries_by_state_and_attempts() == {("delivered", 1): 1, ("pending", 0): 5}
        (audit,) = api(two, "GET", "/subscribers").json()
        assert (audit["state"], audit["pending"]) == ("paused", 5)

        assert api(two, "POST", "/subscribers/audit/resume").json()["state"] == "active"
        wait_for(lambda: deliveries_by_state() == {"delivered": 6})
        assert lines() == 6
    finally:
        one.stop()
        two.stop()

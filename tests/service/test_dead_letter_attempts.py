"""`gateway dead-letters` and the admin API's dead letters count every attempt recorded for the
delivery, as the event's page lists them: a redrive restarts the retry schedule, not the
history. Against a real `gateway serve` on each store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.support import ADMIN_CONFIG, api, post_finchpay, wait_for
from tests.service.harness import GatewayProcess, free_port

# Nobody listens on the port: every attempt is refused. One retry: two attempts, then dead.
LEDGER = f"""
[subscribers.ledger]
kind = "http"
url = "http://127.0.0.1:{free_port()}/hook"
secret = "whsec_dGVzdC1zZWNyZXQtZm9yLWxlZGdlcg=="
retry_schedule = [0.05]
timeout_seconds = 1

[[routes]]
sources = ["finchpay"]
subscribers = ["ledger"]
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayProcess]:
    config = ADMIN_CONFIG + LEDGER
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        config = config.replace(
            'url = "sqlite:///./data/gateway.db"', f"url = {json.dumps(url)}"
        ).replace('path = "./data/events.jsonl"', f'path = "{tmp_path}/events.jsonl"')
    process = GatewayProcess(tmp_path, config).start()
    yield process
    process.stop()


def ledger_attempts_once_dead(gateway: GatewayProcess, event_id: str, count: int) -> None:
    """Wait until the event's ledger delivery is dead with `count` attempts recorded."""

    def dead_after() -> bool:
        record = gateway.event_record(event_id)
        assert record is not None
        (ledger,) = (d for d in record.deliveries if d.subscriber == "ledger")
        return ledger.state == "dead" and len(ledger.attempts) == count

    wait_for(dead_after, timeout=30, step=0.1)


def test_dead_letters_count_the_attempts_before_a_redrive(gateway: GatewayProcess) -> None:
    post_finchpay(gateway, "pay_redriven")
    (row,) = gateway.events()
    ledger_attempts_once_dead(gateway, row.id, 2)
    redriven = gateway.gateway_cli("redrive", "--subscriber", "ledger")
    assert redriven.stdout.strip() == "redriven: 1", redriven.stderr
    # Two more, and dead again: four attempts on the event's page.
    ledger_attempts_once_dead(gateway, row.id, 4)
    (delivery,) = (
        d
        for d in api(gateway, "GET", f"/events/{row.id}").json()["deliveries"]
        if d["subscriber"] == "ledger"
    )
    assert len(delivery["attempts"]) == 4

    listed = gateway.gateway_cli("dead-letters")
    assert listed.returncode == 0, listed.stderr
    header, line = listed.stdout.splitlines()
    assert header.split("\t")[:3] == ["event_id", "subscriber", "attempts"]
    assert line.split("\t")[:3] == [row.id, "ledger", "4"]
    as_json = gateway.gateway_cli("dead-letters", "--json")
    (letter,) = [json.loads(text) for text in as_json.stdout.splitlines()]
    assert (letter["event_id"], letter["attempts"]) == (row.id, 4)
    (item,) = api(gateway, "GET", "/dead-letters").json()["items"]
    assert (item["event_id"], item["attempts"]) == (row.id, 4)

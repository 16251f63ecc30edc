"""`gateway replay` and the admin API's replay name the event's subscribers they did not send it
to, and why: the config they read does not define them (the gateway that delivered the event
read another one). Never a silent "replayed to 1 subscriber" for an event that had three."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.admin.support import ADMIN_TOKEN, AUTH, post_finchpay, wait_for
from tests.service.harness import BASE_CONFIG, REPO, GatewayProcess

ADMIN = f'\n[admin]\ntoken = "{ADMIN_TOKEN}"\n'
# The gateway that delivered the event: BASE_CONFIG's `audit`, and two more.
THREE_SUBSCRIBERS = (
    BASE_CONFIG
    + ADMIN
    + """
[subscribers.ledger]
kind = "file"
path = "./data/ledger.jsonl"

[subscribers.crm]
kind = "file"
path = "./data/crm.jsonl"

[[routes]]
subscribers = ["ledger", "crm"]
"""
)
# The same store, read with a config naming `audit` only (as the default file does).
ONE_SUBSCRIBER = BASE_CONFIG + ADMIN
# The same store, read with a config naming none of the event's subscribers.
NONE_OF_THEM = BASE_CONFIG.replace("[subscribers.audit]", "[subscribers.elsewhere]").replace(
    'subscribers = ["audit"]', 'subscribers = ["elsewhere"]'
)


@pytest.fixture
def delivered(tmp_path: Path) -> Iterator[tuple[GatewayProcess, str]]:
    """A gateway of three subscribers, and the id of an event it delivered to all three."""
    gateway = GatewayProcess(tmp_path, THREE_SUBSCRIBERS).start()
    try:
        post_finchpay(gateway, "pay_replayed")
        (row,) = gateway.events()
        wait_for(
            lambda: (
                (record := gateway.event_record(row.id)) is not None
                and [d.state for d in record.deliveries] == ["delivered"] * 3
            )
        )
        yield gateway, row.id
    finally:
        gateway.stop()


def replay_with(workdir: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`gateway replay` run in the gateway's directory (its store) with another config file."""
    path = workdir / "other.toml"
    path.write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "replay", *args, "--config", str(path)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_replay_names_the_subscribers_its_config_does_not_define(
    delivered: tuple[GatewayProcess, str],
) -> None:
    gateway, event_id = delivered
    result = replay_with(gateway.workdir, ONE_SUBSCRIBER, event_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"replayed {event_id} to 1 subscriber"
    said = result.stderr
    assert "ledger" in said
    assert "crm" in said
    assert "audit" not in said  # it was replayed
    assert str(gateway.workdir / "other.toml") in said  # the file it read
    assert "--config" in said  # and what to do about it


def test_replay_to_none_of_its_subscribers_fails_saying_why(
    delivered: tuple[GatewayProcess, str],
) -> None:
    gateway, event_id = delivered
    result = replay_with(gateway.workdir, NONE_OF_THEM, event_id)
    assert result.returncode == 1
    assert result.stdout == ""
    said = result.stderr
    assert said.startswith("nothing replayed")
    for name in ("audit", "ledger", "crm"):
        assert name in said
    assert str(gateway.workdir / "other.toml") in said
    # Nothing was queued: every delivery is still the delivered one.
    record = gateway.event_record(event_id)
    assert record is not None
    assert [len(delivery.attempts) for delivery in record.deliveries] == [1, 1, 1]


def test_the_admin_api_names_the_subscribers_its_config_does_not_define(
    delivered: tuple[GatewayProcess, str],
) -> None:
    first, event_id = delivered
    first.stop()
    # The same store, served with a config that names `audit` only.
    gateway = GatewayProcess(first.workdir, ONE_SUBSCRIBER).start()
    try:
        answer = httpx.post(
            f"{gateway.base_url}/admin/api/events/{event_id}/replay", headers=AUTH, timeout=10
        )
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["replayed"] == 1
        assert sorted(body["not_replayed"], key=lambda item: item["subscriber"]) == [
            {"subscriber": "crm", "reason": "not_configured"},
            {"subscriber": "ledger", "reason": "not_configured"},
        ]
        # Named explicitly, a configured subscriber is replayed with nothing to say.
        only = httpx.post(
            f"{gateway.base_url}/admin/api/events/{event_id}/replay",
            headers=AUTH,
            json={"subscribers": ["audit"]},
            timeout=10,
        )
        assert only.json() == {"replayed": 1}
    finally:
        gateway.stop()


def test_replay_of_an_event_no_route_selected_fails_saying_why(tmp_path: Path) -> None:
    unrouted = BASE_CONFIG.replace(
        'subscribers = ["audit"]', 'sources = ["finexer"]\nsubscribers = ["audit"]'
    )
    gateway = GatewayProcess(tmp_path, unrouted).start()
    try:
        post_finchpay(gateway, "pay_unrouted")
        (row,) = gateway.events()
        result = gateway.gateway_cli("replay", row.id)
        assert result.returncode == 1
        assert result.stderr.startswith("nothing replayed")
        assert "--subscriber" in result.stderr
        named = gateway.gateway_cli("replay", row.id, "--subscriber", "audit")
        assert named.returncode == 0, named.stderr
        assert named.stdout.strip() == f"replayed {row.id} to 1 subscriber"
    finally:
        gateway.stop()

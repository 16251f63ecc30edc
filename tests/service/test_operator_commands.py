"""The operator's commands a newcomer's first hour tried: quarantine, dead-letters and public-key
on names that do not exist, sample to a base URL, --version and new-secret (README: Command
line)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from gateway.signing import public_key_of
from tests.service.harness import REPO, GatewayProcess
from tests.support import TOKEN


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path).start()
    yield process
    process.stop()


def gateway_command(*args: str) -> subprocess.CompletedProcess[str]:
    """A command that needs no config."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_quarantine_lists_drops_and_refuses_unknown_ids(gateway: GatewayProcess) -> None:
    bad = b'{"message":"Account Credited","identifier":"ACCOUNT_CREDITED","code":"3023"}'
    for body in (bad, b"not json at all"):
        assert gateway.post("lifecycle", body, params={"token": TOKEN}).status_code == 422
    ids = sorted(payload.id for payload in gateway.quarantined())
    assert len(ids) == 2

    listed = gateway.gateway_cli("quarantine")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [int(row[0]) for row in rows] == ids
    assert {row[1] for row in rows} == {"lifecycle"}
    assert "$.code" in rows[0][3]

    as_json = gateway.gateway_cli("quarantine", "--json")
    assert as_json.returncode == 0, as_json.stderr
    items = [msgspec.json.decode(line) for line in as_json.stdout.splitlines()]
    assert [item["id"] for item in items] == ids
    for item in items:
        assert set(item) == {"id", "source", "received_at", "verification", "error"}
        assert item["source"] == "lifecycle"
        assert item["verification"] == "token"
        assert item["received_at"].endswith("Z")
        datetime.fromisoformat(item["received_at"])  # RFC 3339

    dropped = gateway.gateway_cli("quarantine", "drop", str(ids[0]))
    assert dropped.returncode == 0, dropped.stderr
    assert [payload.id for payload in gateway.quarantined()] == ids[1:]
    listed_again = gateway.gateway_cli("quarantine")
    assert [line.split("\t")[0] for line in listed_again.stdout.splitlines()] == [str(ids[1])]

    for unknown in (str(ids[0]), "999999"):
        again = gateway.gateway_cli("quarantine", "drop", unknown)
        assert again.returncode == 1
        assert f"no quarantined payload with id {unknown}" in again.stderr
    assert gateway.gateway_cli("quarantine", "drop").returncode == 2


def test_dead_letters_of_an_unknown_subscriber_is_an_error(gateway: GatewayProcess) -> None:
    result = gateway.gateway_cli("dead-letters", "--subscriber", "nope")
    assert result.returncode == 1
    assert "no subscriber named 'nope'" in result.stderr
    assert result.stdout == ""
    assert gateway.gateway_cli("dead-letters", "--subscriber", "audit").returncode == 0


def test_public_key_of_a_subscriber_without_a_secret_says_so(tmp_path: Path) -> None:
    result = GatewayProcess(tmp_path).gateway_cli("public-key", "audit")
    assert result.returncode == 1
    assert "audit has no secret" in result.stdout + result.stderr
    assert "v1" not in result.stdout + result.stderr


def test_sample_to_a_base_url_posts_to_the_sources_webhook_path(gateway: GatewayProcess) -> None:
    # The finfusion adapter's source here is `finfusion-main`, not the adapter's name.
    for base in (gateway.base_url, gateway.base_url + "/"):
        result = gateway.gateway_cli("sample", "finfusion", "--to", base)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"POST {gateway.base_url}/webhooks/finfusion-main -> 200" in result.stdout
    sources = {row.source for row in gateway.events()}
    assert sources == {"finfusion-main"}


def test_version_prints_finrelay_and_the_version() -> None:
    from gateway import __version__

    result = gateway_command("--version")
    assert result.returncode == 0
    assert result.stdout == f"finrelay {__version__}\n"


def test_new_secret_prints_a_fresh_whsec_by_default() -> None:
    first, second = gateway_command("new-secret"), gateway_command("new-secret", "--kind", "whsec")
    assert first.returncode == second.returncode == 0
    secrets = [first.stdout.strip(), second.stdout.strip()]
    assert secrets[0] != secrets[1]
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 16


def test_new_secret_whsk_prints_the_key_and_its_public_key_on_stderr() -> None:
    result = gateway_command("new-secret", "--kind", "whsk")
    assert result.returncode == 0
    secret = result.stdout.strip()
    assert secret.startswith("whsk_")
    assert len(base64.b64decode(secret.removeprefix("whsk_"), validate=True)) == 32
    assert public_key_of(secret) in result.stderr
    assert secret not in result.stderr

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


def test_quarantine_show_prints_the_body_as_received(gateway: GatewayProcess) -> None:
    body = b"not json at all\n\x00\xff"
    assert gateway.post("lifecycle", body, params={"token": TOKEN}).status_code == 422
    (payload,) = gateway.quarantined()

    shown = subprocess.run(
        [
            *(sys.executable, "-m", "gateway", "quarantine", "show", str(payload.id)),
            *("--config", str(gateway.config_path)),
        ],
        cwd=gateway.workdir,
        capture_output=True,
        timeout=60,
        check=False,
        env={**gateway.env, "PYTHONPATH": str(REPO)},
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == body  # byte for byte: what `reprocess` will read again

    missing = gateway.gateway_cli("quarantine", "show", "999999")
    assert missing.returncode == 1
    assert "no quarantined payload with id 999999" in missing.stderr
    assert gateway.gateway_cli("quarantine", "show").returncode == 2
    assert [p.id for p in gateway.quarantined()] == [payload.id]  # showing keeps it


def test_quarantine_with_an_id_but_no_action_says_what_to_type() -> None:
    result = gateway_command("quarantine", "2")
    assert result.returncode == 2
    assert "invalid choice" not in result.stderr
    assert "quarantine show 2" in result.stderr
    assert "quarantine drop 2" in result.stderr
    other = gateway_command("quarantine", "list")
    assert other.returncode == 2
    assert "quarantine show ID" in other.stderr


def test_dead_letters_of_an_unknown_subscriber_is_an_error(gateway: GatewayProcess) -> None:
    result = gateway.gateway_cli("dead-letters", "--subscriber", "nope")
    assert result.returncode == 1
    assert "no subscriber named 'nope'" in result.stderr
    assert result.stdout == ""
    none = gateway.gateway_cli("dead-letters", "--subscriber", "audit")
    assert none.returncode == 0
    assert none.stdout == "event_id\tsubscriber\tattempts\tdead_at\tlast_error\n"


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

    for option in ("--version", "-V"):
        result = gateway_command(option)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"finrelay {__version__}\n"


def finrelay_command(*args: str) -> subprocess.CompletedProcess[str]:
    """The `finrelay` console script of this venv (pyproject.toml's [project.scripts]; `make
    test` installs it), beside the `gateway` one."""
    script = Path(sys.executable).parent / "finrelay"
    assert script.exists(), f"{script} missing: install the project (make test) to get it"
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_finrelay_is_the_same_cli_under_its_own_name() -> None:
    from gateway import __version__

    version = finrelay_command("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"finrelay {__version__}\n"
    help_text = finrelay_command("--help")
    assert help_text.returncode == 0
    assert help_text.stdout.startswith("usage: finrelay ")
    assert "new-secret" in help_text.stdout
    secret = finrelay_command("new-secret")
    assert secret.returncode == 0
    assert secret.stdout.startswith("whsec_")
    # Called as `python -m gateway`, it is still `gateway`, not `__main__.py`.
    assert gateway_command("--help").stdout.startswith("usage: gateway ")


def description_of(command: str) -> str:
    """What `gateway COMMAND --help` says between its usage and its arguments."""
    result = gateway_command(command, "--help")
    assert result.returncode == 0, result.stderr
    _usage, _, rest = result.stdout.partition("\n\n")
    description, _, _arguments = rest.partition("\n\n")
    assert not description.startswith(("positional arguments:", "options:")), command
    return " ".join(description.split())


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("serve", "SIGTERM"),
        ("replay", "stored event"),
        ("enable", "410 Gone"),
        ("public-key", "whpk_"),
    ],
)
def test_every_operator_command_has_a_description(command: str, says: str) -> None:
    assert says in description_of(command)


def test_help_says_what_option_values_mean() -> None:
    new_secret = " ".join(gateway_command("new-secret", "--help").stdout.split())
    assert "HMAC-SHA256" in new_secret
    assert "Ed25519" in new_secret
    redrive = " ".join(gateway_command("redrive", "--help").stdout.split())
    assert "RFC 3339" in redrive
    assert "Unix seconds" in redrive
    quarantine = " ".join(gateway_command("quarantine", "--help").stdout.split())
    assert "show ID" in quarantine


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

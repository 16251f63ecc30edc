"""config/examples/two-nodes/ is a valid config, as a user checks it (`gateway check-config`),
and its database password shows nowhere in what the check prints."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.service.harness import REPO

EXAMPLE = "config/examples/two-nodes/gateway.toml"
# A password with characters a URL reserves, percent-encoded as the example says.
PASSWORD = "pw%40example%2F%3A%25secret"
ENVIRONMENT = {
    "FINFUSION_SECRET": "whsec_ZW52LXNlY3JldC1mb3ItdGhlLWNsaS10ZXN0",
    "FINCHPAY_TOKEN": "finchpay-token-for-the-example",
    "LEDGER_WEBHOOK_SECRET": "whsec_ZW52LXNlY3JldC1mb3ItdGhlLWNsaS10ZXN0",
    "FINRELAY_ADMIN_TOKEN": "admin-token-for-the-example",
}


def check_config(**environ: str) -> subprocess.CompletedProcess[str]:
    inherited = {key: value for key, value in os.environ.items() if key != "PGPASSWORD"}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", EXAMPLE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**inherited, "PYTHONPATH": str(REPO), **ENVIRONMENT, **environ},
    )


def test_the_two_node_example_is_valid_and_keeps_its_password_out_of_the_output() -> None:
    result = check_config(PGPASSWORD=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert f"{EXAMPLE}: ok (2 sources, 1 subscriber, 1 route)" in result.stdout
    for secret in (PASSWORD, "pw@example"):
        assert secret not in result.stdout + result.stderr


def test_the_two_node_example_takes_its_password_from_the_environment() -> None:
    result = check_config()
    assert result.returncode == 1
    assert "store.url: environment variable PGPASSWORD is not set" in result.stderr

"""`gateway normalize` as a user runs it: a subprocess, stdin or a file, exit codes, stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from tests.support import FIXTURES

LIFECYCLE = b'{"message":"Balance Update","identifier":"BALANCE_UPDATE","code":3019,"balance":500}'


def gateway(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_normalize_reads_stdin_and_prints_the_canonical_event() -> None:
    result = gateway("normalize", "account_lifecycle", "--currency", "ngn", stdin=LIFECYCLE)
    assert result.returncode == 0, result.stderr
    event = msgspec.json.decode(result.stdout)
    assert event["type"] == "account.balance_updated"
    assert event["source"] == "/sources/account_lifecycle"
    assert event["verification"] == "none"
    assert event["data"]["balance"] == {"value": "500", "currency": "NGN"}


@pytest.mark.parametrize(
    ("adapter", "body", "status", "provider_status"),
    [
        ("finchpay", b'{"id":"tx_1","status":"COMPLETE"}', "succeeded", "COMPLETE"),
        (
            "finexer",
            b'{"id":"e","type":"consent.authorised","data":{"object":{"status":"authorised"}}}',
            "authorized",
            "authorised",
        ),
        ("account_lifecycle", LIFECYCLE, None, None),
    ],
)
def test_normalize_shows_the_canonical_status_and_the_providers_own(
    adapter: str, body: bytes, status: str | None, provider_status: str | None
) -> None:
    result = gateway("normalize", adapter, "--currency", "NGN", stdin=body)
    assert result.returncode == 0, result.stderr
    data = msgspec.json.decode(result.stdout)["data"]
    assert (data["status"], data["provider_status"]) == (status, provider_status)
    # In the contract's order: the canonical word first, the provider's right after it.
    assert list(data)[2:4] == ["status", "provider_status"]


def test_normalize_reads_a_file_and_honours_source_and_headers(tmp_path: Path) -> None:
    body = tmp_path / "flat.json"
    body.write_bytes(b'{"account_uuid":"acc-1","timestamp":"2025-01-14T10:30:00+00:00"}')
    result = gateway(
        "normalize",
        "finaegis",
        str(body),
        "--source",
        "bank-eu",
        "--header",
        "X-Webhook-Event: account.frozen",
        "--header",
        "X-Webhook-Delivery:dlv-9",
        "--compact",
    )
    assert result.returncode == 0, result.stderr
    event = msgspec.json.decode(result.stdout)
    assert event["type"] == "account.frozen"
    assert event["source"] == "/sources/bank-eu"
    assert event["providerid"] == "dlv-9"
    # --compact prints the exact bytes: the payload is embedded verbatim.
    assert body.read_bytes() in result.stdout


def test_normalize_is_deterministic_for_a_given_receive_time() -> None:
    args = ("normalize", "account_lifecycle", "--received-at", "2026-01-01T00:00:00Z")
    assert gateway(*args, stdin=LIFECYCLE).stdout == gateway(*args, stdin=LIFECYCLE).stdout


@pytest.mark.parametrize(
    ("adapter", "body", "path"),
    [
        ("finfusion", b'{"id": "evt_1"}', "$"),
        (
            "finfusion",
            b'{"id":"e","type":"t","data":{"object":{"amount":"10"}}}',
            "$.data.object.amount",
        ),
        ("finchpay", b"[1, 2]", "$"),
        ("finexer", b'{"id": "e", "type": ', "$"),
        ("account_lifecycle", b"", "$"),
    ],
)
def test_normalize_exits_2_with_the_typed_error_on_stderr(
    adapter: str, body: bytes, path: str
) -> None:
    result = gateway("normalize", adapter, stdin=body)
    assert result.returncode == 2
    assert result.stdout == b""
    error = msgspec.json.decode(result.stderr)
    assert error["error"] == "invalid_payload"
    assert f"`{path}`" in error["detail"]


def test_normalize_refuses_an_unknown_adapter() -> None:
    result = gateway("normalize", "paypal", stdin=LIFECYCLE)
    assert result.returncode == 2
    assert b"finfusion" in result.stderr  # the message lists the adapters that exist


def test_normalize_reports_a_missing_file() -> None:
    result = gateway("normalize", "finchpay", "/nonexistent/body.json")
    assert result.returncode == 2
    assert msgspec.json.decode(result.stderr)["error"] == "unreadable_file"


def test_normalize_accepts_provider_fixtures_from_files() -> None:
    cases = sorted((FIXTURES / "finchpay").glob("*.case.json"))[:3]
    assert cases, "the finchpay fixtures are missing"
    for case in cases:
        body = case.with_name(case.name.removesuffix(".case.json") + ".json")
        result = gateway("normalize", "finchpay", str(body))
        assert result.returncode == 0, result.stderr
        assert msgspec.json.decode(result.stdout)["provider"] == "finchpay"

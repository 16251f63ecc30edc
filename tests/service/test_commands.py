"""The operator's commands against a running gateway: reprocess and sample; and what the file
subscriber writes (docs/reference/delivery.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from adapters import finfusion
from adapters.registry import ADAPTERS
from gateway.store import Store
from gateway.store.base import QuarantinedPayload
from tests.service.harness import BASE_CONFIG, GatewayProcess
from tests.support import SECRET, TOKEN


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path).start()
    yield process
    process.stop()


def wait_for_lines(path: Path, count: int, timeout: float = 10.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_bytes().splitlines()
            if len(lines) >= count:
                return [msgspec.json.decode(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines")


async def swap_quarantined(store: Store, payload: QuarantinedPayload) -> None:
    """Quarantine `payload` anew (same source, headers, verification and error) in place of
    the payload of its id."""
    await store.quarantine(
        source=payload.source,
        received_at=payload.received_at,
        body=payload.body,
        headers=payload.headers,
        verification=payload.verification,
        error=payload.error,
    )
    assert await store.drop_quarantined(payload.id)


def test_reprocess_keeps_what_still_does_not_read(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, BASE_CONFIG).start()
    try:
        bad = b'{"message":"Account Credited","identifier":"ACCOUNT_CREDITED","code":"3023"}'
        wrong_type = gateway.post("lifecycle", bad, params={"token": TOKEN})
        assert wrong_type.status_code == 422
        assert "$.code" in wrong_type.json()["detail"]
        still_bad = gateway.post("lifecycle", b"not json at all", params={"token": TOKEN})
        assert still_bad.status_code == 422
    finally:
        gateway.stop()
    assert len(gateway.quarantined()) == 2

    result = gateway.gateway_cli("reprocess")
    # Nothing changed since: both stay in quarantine, and exit 1 says so.
    assert result.returncode == 1
    assert "2 still invalid" in result.stdout
    assert len(gateway.quarantined()) == 2


def test_reprocess_accepts_and_routes_what_now_reads(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    try:
        # Authenticated but unreadable: no identifier and no code.
        body = b'{"message":"Account Credited","accountNumber":"GB12","amount":5}'
        assert gateway.post("lifecycle", body, params={"token": TOKEN}).status_code == 422
    finally:
        gateway.stop()
    # Simulate the upgrade that teaches the adapter this shape: the quarantined payload is
    # swapped for what the new adapter version would read, kept as the gateway kept it.
    (kept,) = gateway.quarantined()
    readable = msgspec.structs.replace(
        kept,
        body=b'{"message":"Account Credited","identifier":"ACCOUNT_CREDITED",'
        b'"accountNumber":"GB12","amount":5}',
    )
    gateway.with_store(lambda store: swap_quarantined(store, readable))
    assert [payload.body for payload in gateway.quarantined()] == [readable.body]
    result = gateway.gateway_cli("reprocess")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 accepted" in result.stdout
    (row,) = gateway.events()
    assert row.type == "account.credited"
    assert msgspec.json.decode(row.body)["data"]["amount"] == {"value": "5", "currency": "NGN"}
    assert len(row.deliveries) == 1

    # Once released, a payload is not reprocessed again.
    again = gateway.gateway_cli("reprocess")
    assert "0 accepted" in again.stdout

    # A gateway started afterwards delivers it.
    gateway.start()
    try:
        lines = wait_for_lines(gateway.workdir / "data" / "events.jsonl", 1)
        assert lines[0]["webhook-id"] == row.id
    finally:
        gateway.stop()


def test_sample_posts_a_correctly_signed_webhook_of_every_adapter(
    gateway: GatewayProcess,
) -> None:
    # The harness's source of each built-in adapter (BASE_CONFIG).
    targets = {
        "finaegis": "finaegis",
        "finexer": "finexer",
        "finfusion": "finfusion-main",
        "finchpay": "finchpay",
        "account_lifecycle": "lifecycle",
    }
    assert set(targets) == set(ADAPTERS)
    for adapter, source in targets.items():
        result = gateway.gateway_cli(
            "sample", adapter, "--to", f"{gateway.base_url}/webhooks/{source}"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"accepted"' in result.stdout


def test_sample_takes_a_canonical_or_provider_type(gateway: GatewayProcess) -> None:
    url = f"{gateway.base_url}/webhooks/finchpay"
    assert (
        gateway.gateway_cli("sample", "finchpay", "payment.refunded", "--to", url).returncode == 0
    )
    assert gateway.gateway_cli("sample", "finchpay", "HOLD", "--to", url).returncode == 0
    types = {row.type for row in gateway.events()}
    assert types == {"payment.refunded", "payment.processing"}


def test_sample_of_a_type_the_adapter_does_not_know_says_so_and_which_it_knows(
    gateway: GatewayProcess,
) -> None:
    url = f"{gateway.base_url}/webhooks/finfusion-main"
    result = gateway.gateway_cli("sample", "finfusion", "nosuch.type", "--to", url)
    # Posted and stored all the same (unmapped), with a note on stderr, not on stdout.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "note: finfusion has no canonical type for 'nosuch.type'" in result.stderr
    assert "types it knows: " in result.stderr
    assert "payment.succeeded" in result.stderr.partition("types it knows: ")[2]
    assert "note:" not in result.stdout
    (row,) = gateway.events()
    assert row.type == "finfusion.nosuch.type"

    known = gateway.gateway_cli("sample", "finfusion", "payment.succeeded", "--to", url)
    assert known.returncode == 0
    assert "note:" not in known.stderr


def test_sample_with_a_wrong_secret_is_refused(gateway: GatewayProcess) -> None:
    result = gateway.gateway_cli(
        "sample",
        "finfusion",
        "--to",
        f"{gateway.base_url}/webhooks/finfusion-main",
        "--secret",
        "whsec_wrong",
    )
    assert result.returncode == 1
    assert "401" in result.stdout


def test_file_subscriber_gets_one_line_per_delivery(gateway: GatewayProcess) -> None:
    now = datetime.now(UTC)
    bodies = [
        msgspec.json.encode(
            {
                "id": f"evt_{n}",
                "type": "payment.succeeded",
                "created": int(now.timestamp()),
                "data": {"object": {"id": f"pay_{n}", "amount": 1000 + n, "currency": "eur"}},
            }
        )
        for n in range(5)
    ]
    ids = []
    for body in bodies:
        response = gateway.post(
            "finfusion-main", body, headers=finfusion.sign_finfusion(body, SECRET, now)
        )
        ids.append(response.json()["id"])
    lines = wait_for_lines(gateway.workdir / "data" / "events.jsonl", 5)
    assert sorted(line["webhook-id"] for line in lines) == sorted(ids)
    for line in lines:
        assert set(line) == {"webhook-id", "webhook-timestamp", "webhook-signature", "event"}
        assert line["webhook-signature"] is None  # the file subscriber has no secret
        assert isinstance(line["webhook-timestamp"], int)
        event = line["event"]
        assert isinstance(event, dict)
        assert event["id"] == line["webhook-id"]
        assert event["specversion"] == "1.0"
    # The line is on disk before the attempt is recorded: wait for the record.
    deadline = time.monotonic() + 10
    while (stats := gateway.stats())["pending"] + stats["held"] + stats["dead"] != 0:
        assert time.monotonic() < deadline, "deliveries were written but not recorded"
        time.sleep(0.05)
    records = gateway.event_records().values()
    assert sum(len(delivery.attempts) for record in records for delivery in record.deliveries) == 5


def test_public_key_prints_the_whpk_of_a_v1a_subscriber(tmp_path: Path) -> None:
    import base64
    import os

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from adapters.source import Secret
    from gateway.signing import SigningKeys

    signing_key = "whsk_" + base64.b64encode(os.urandom(32)).decode()
    config = (
        BASE_CONFIG
        + f"""
[subscribers.ledger]
url = "http://127.0.0.1:9/events"
secret = "{signing_key}"
"""
    )
    gateway = GatewayProcess(tmp_path, config)
    result = gateway.gateway_cli("public-key", "ledger")
    assert result.returncode == 0, result.stderr
    public = result.stdout.strip()
    assert public.startswith("whpk_")
    assert signing_key[5:] not in result.stdout  # the secret half is never printed

    signature = SigningKeys([Secret(signing_key)]).sign("evt_1", 1, b"{}")
    assert signature is not None
    Ed25519PublicKey.from_public_bytes(base64.b64decode(public[5:])).verify(
        base64.b64decode(signature.removeprefix("v1a,")), b"evt_1.1.{}"
    )
    assert gateway.gateway_cli("public-key", "audit").returncode == 1  # a v1-only subscriber

"""Ingress edge cases against a real `gateway serve`: a body the client cuts short is neither
stored nor quarantined, and a quarantined payload keeps no signature header, even one whose
name is a source's setting."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec
import pytest

from adapters import finexer
from adapters.samples import sample_body
from tests.service.harness import BASE_CONFIG, GatewayProcess
from tests.support import SECRET, TOKEN

CONFIG = (
    BASE_CONFIG
    + f"""
[sources.finexer-custom]
adapter = "finexer"
secret = "{SECRET}"
signature_header = "x-fx-auth"
"""
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("gateway"), CONFIG).start()
    yield process
    process.stop()


def send_part_then_close(gateway: GatewayProcess, declared: bytes, sent: bytes) -> None:
    """A raw client: headers declaring all of `declared`, only `sent` of the body, then gone."""
    head = (
        f"POST /webhooks/finchpay?token={TOKEN} HTTP/1.1\r\n"
        f"host: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(declared)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as client:
        client.sendall(head + sent)
        time.sleep(0.3)  # the gateway reads what came, and waits for the rest


def counts(gateway: GatewayProcess) -> tuple[int, int]:
    """Events stored, payloads in quarantine."""
    stats = gateway.stats()
    return stats["events"], stats["quarantined"]


def test_a_body_cut_short_whose_prefix_is_valid_json_is_not_stored(
    gateway: GatewayProcess,
) -> None:
    before = counts(gateway)
    event = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    # JSON allows trailing whitespace: the part that arrives is a whole, valid webhook.
    declared = event + b" " * 500
    send_part_then_close(gateway, declared, event + b" " * 10)
    gateway.logs_once_they_say('"incomplete_body"')
    assert counts(gateway) == before


def test_a_body_cut_in_half_is_not_quarantined(gateway: GatewayProcess) -> None:
    before = counts(gateway)
    logged = gateway.logs().count('"incomplete_body"')
    event = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    send_part_then_close(gateway, event, event[: len(event) // 2])
    deadline = time.monotonic() + 5
    while gateway.logs().count('"incomplete_body"') == logged and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.logs().count('"incomplete_body"') == logged + 1
    assert counts(gateway) == before


def test_the_sources_own_signature_header_is_not_kept_in_quarantine(
    gateway: GatewayProcess,
) -> None:
    body = b'{"id": "evt_1", "type": 7}'  # authenticated, but not Finexer's shape
    signature = finexer.sign_finexer(body, SECRET, datetime.now(UTC))["fx-signature"]
    response = gateway.post(
        "finexer-custom", body, headers={"x-fx-auth": signature, "x-trace": "kept"}
    )
    assert response.status_code == 422
    rows = [payload.headers for payload in gateway.quarantined() if payload.body == body]
    assert len(rows) == 1
    kept = rows[0]
    assert "x-fx-auth" not in kept
    assert signature not in msgspec.json.encode(kept).decode()
    assert kept["x-trace"] == "kept"

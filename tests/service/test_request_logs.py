"""What the webhook request log line says: the client's address, the source asked for (even an
unknown one), and refusals of credentials or addresses at `warning`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from adapters.samples import sample_body
from tests.service.harness import GatewayProcess
from tests.support import TOKEN


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path).start()
    yield process
    process.stop()


def webhook_line(gateway: GatewayProcess, request_id: str) -> dict[str, object]:
    gateway.logs_once_they_say(request_id)
    for text in gateway.logs().splitlines():
        if request_id in text and text.startswith("{"):
            line: dict[str, object] = msgspec.json.decode(text)
            if line.get("event") == "webhook" and line.get("request_id") == request_id:
                return line
    raise AssertionError(f"no webhook line for {request_id}")


def test_an_unknown_source_is_logged_with_the_name_asked_for_cut_to_64(
    gateway: GatewayProcess,
) -> None:
    name = "x" * 100
    response = gateway.post(name, b"{}")
    assert response.status_code == 404
    line = webhook_line(gateway, response.headers["x-request-id"])
    assert line["outcome"] == "unknown_source"
    assert line["source"] == "x" * 64
    assert line["client"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("source", "params", "status"),
    [
        ("finchpay", {"token": "wrong"}, 401),
        ("finchpay-walled", {"token": TOKEN}, 403),  # allow_ips is 203.0.113.0/24
    ],
)
def test_refused_credentials_or_addresses_are_warnings_with_the_client(
    gateway: GatewayProcess, source: str, params: dict[str, str], status: int
) -> None:
    body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    response = gateway.post(source, body, params=params)
    assert response.status_code == status
    line = webhook_line(gateway, response.headers["x-request-id"])
    assert line["level"] == "warning"
    assert line["status"] == status
    assert line["client"] == "127.0.0.1"


def test_an_accepted_webhook_is_info_with_the_client(gateway: GatewayProcess) -> None:
    body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    response = gateway.post("finchpay", body, params={"token": TOKEN})
    assert response.status_code == 200
    line = webhook_line(gateway, response.headers["x-request-id"])
    assert line["level"] == "info"
    assert line["outcome"] == "accepted"
    assert line["client"] == "127.0.0.1"

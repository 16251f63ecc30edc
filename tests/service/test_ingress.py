"""Every row of docs/reference/ingress.md, against a real `gateway serve` over loopback HTTP."""

from __future__ import annotations

import concurrent.futures
import select
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest

from adapters import finfusion
from adapters.registry import ADAPTERS
from adapters.samples import sample_body
from gateway.store.base import EventRow
from tests.service.harness import BASE_CONFIG, GatewayProcess
from tests.support import OTHER_SECRET, SECRET, TOKEN


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("gateway")).start()
    yield process
    process.stop()


def now() -> datetime:
    return datetime.now(UTC)


def signed_finfusion(
    body: bytes, secret: str = SECRET, at: datetime | None = None
) -> dict[str, str]:
    return finfusion.sign_finfusion(body, secret, at or now())


def stored_event_ids(gateway: GatewayProcess) -> list[str]:
    return [row.id for row in gateway.events()]


def stored_event(gateway: GatewayProcess, event_id: str) -> EventRow:
    (row,) = (row for row in gateway.events() if row.id == event_id)
    return row


# 200 accepted / duplicate.


def test_signed_event_is_accepted_and_stored(gateway: GatewayProcess) -> None:
    body = sample_body("finfusion", "payment.succeeded", now())
    response = gateway.post("finfusion-main", body, headers=signed_finfusion(body))
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "accepted"
    assert answer["id"].startswith("evt_")
    stored = stored_event(gateway, answer["id"])
    assert (stored.source, stored.type) == ("finfusion-main", "payment.succeeded")
    event = msgspec.json.decode(stored.body)
    assert event["source"] == "/sources/finfusion-main"
    assert event["verification"] == "signature"


def test_every_adapter_accepts_its_sample(gateway: GatewayProcess) -> None:
    # The harness's source of each built-in adapter (BASE_CONFIG).
    sources = {
        "finaegis": "finaegis",
        "finexer": "finexer",
        "finfusion": "finfusion-main",
        "finchpay": "finchpay",
        "account_lifecycle": "lifecycle",
    }
    assert set(sources) == set(ADAPTERS)
    for adapter, source in sources.items():
        body = sample_body(adapter, None, now())
        sign = ADAPTERS[adapter].sign
        if sign is not None:
            response = gateway.post(source, body, headers=sign(body, SECRET, now()))
        else:
            response = gateway.post(source, body, params={"token": TOKEN})
        assert response.status_code == 200, (adapter, response.text)
        assert response.json()["status"] == "accepted"


def test_provider_retry_is_a_duplicate_with_the_same_id(gateway: GatewayProcess) -> None:
    body = sample_body("finfusion", "transfer.succeeded", now())
    first = gateway.post("finfusion-main", body, headers=signed_finfusion(body))
    time.sleep(1.1)  # the provider re-signs its retry with a new timestamp
    retry = gateway.post("finfusion-main", body, headers=signed_finfusion(body))
    assert first.json()["status"] == "accepted"
    assert retry.status_code == 200
    assert retry.json() == {"status": "duplicate", "id": first.json()["id"]}
    record = gateway.event_record(first.json()["id"])
    assert record is not None
    assert len(record.deliveries) == 1  # nothing re-sent: still one delivery


def test_fifty_concurrent_copies_store_exactly_one_event(gateway: GatewayProcess) -> None:
    body = sample_body("finfusion", "payment.refunded", now())
    headers = signed_finfusion(body)
    with httpx.Client(timeout=30) as client:

        def post(_: int) -> httpx.Response:
            return client.post(
                f"{gateway.base_url}/webhooks/finfusion-main", content=body, headers=headers
            )

        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(post, range(50)))
    assert {r.status_code for r in responses} == {200}
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses.count("accepted") == 1
    assert statuses.count("duplicate") == 49
    (event_id,) = {r.json()["id"] for r in responses}
    assert stored_event_ids(gateway).count(event_id) == 1


def test_unknown_provider_type_is_accepted_as_unmapped(gateway: GatewayProcess) -> None:
    body = sample_body("finfusion", "payout.paid", now())
    response = gateway.post("finfusion-main", body, headers=signed_finfusion(body))
    assert response.status_code == 200
    assert stored_event(gateway, response.json()["id"]).type == "finfusion.payout.paid"


def test_content_type_is_not_trusted(gateway: GatewayProcess) -> None:
    body = sample_body("finchpay", "COMPLETE", now())
    response = gateway.post(
        "finchpay", body, params={"token": TOKEN}, headers={"content-type": "text/plain"}
    )
    assert response.status_code == 200


# 404.


def test_unknown_source_is_404(gateway: GatewayProcess) -> None:
    response = gateway.post("no-such-source", b"{}")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_source"


# 401 signature.


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-finfusion-signature": "garbage"},
        {"x-finfusion-signature": "t=1,v1=" + "0" * 64},
    ],
    ids=["missing", "malformed", "wrong-and-stale"],
)
def test_bad_signature_is_401_and_nothing_is_stored(
    gateway: GatewayProcess, headers: dict[str, str]
) -> None:
    before = stored_event_ids(gateway)
    body = sample_body("finfusion", "payment.succeeded", now())
    response = gateway.post("finfusion-main", body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert response.json()["detail"]
    assert stored_event_ids(gateway) == before


def test_signature_by_another_secret_is_401(gateway: GatewayProcess) -> None:
    body = sample_body("finfusion", "payment.succeeded", now())
    response = gateway.post("finfusion-main", body, headers=signed_finfusion(body, OTHER_SECRET))
    assert response.status_code == 401
    assert OTHER_SECRET not in response.text


def test_stale_timestamp_is_401(gateway: GatewayProcess) -> None:
    body = sample_body("finfusion", "payment.succeeded", now())
    headers = signed_finfusion(body, at=now() - timedelta(minutes=10))
    response = gateway.post("finfusion-main", body, headers=headers)
    assert response.status_code == 401
    assert "older" in response.json()["detail"]


def test_rejections_log_no_secret_or_signature(gateway: GatewayProcess) -> None:
    body = sample_body("finfusion", "payment.succeeded", now())
    headers = signed_finfusion(body, OTHER_SECRET)
    gateway.post("finfusion-main", body, headers=headers)
    response = gateway.post("finchpay", b"{}", params={"token": "wrong-token-value"})
    logs = gateway.logs_once_they_say(response.headers["x-request-id"])
    signature = headers["x-finfusion-signature"].split("v1=")[1]
    for secret in (SECRET, OTHER_SECRET, TOKEN, signature, "wrong-token-value"):
        assert secret not in logs


# 401 token.


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"params": {"token": "nope"}}, {"headers": {"authorization": "Bearer nope"}}],
    ids=["missing", "wrong-query", "wrong-bearer"],
)
def test_wrong_token_is_401_and_nothing_is_stored(
    gateway: GatewayProcess, kwargs: dict[str, dict[str, str]]
) -> None:
    before = stored_event_ids(gateway)
    body = sample_body("finchpay", "COMPLETE", now())
    response = gateway.post("finchpay", body, **kwargs)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token"}
    assert stored_event_ids(gateway) == before


def test_bearer_token_is_accepted(gateway: GatewayProcess) -> None:
    body = sample_body("account_lifecycle", "ACCOUNT_CREDITED", now())
    response = gateway.post("lifecycle", body, headers={"authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    record = gateway.event_record(response.json()["id"])
    assert record is not None
    assert msgspec.json.decode(record.body)["verification"] == "token"


# 403.


def test_address_outside_allow_ips_is_403_even_with_the_right_token(
    gateway: GatewayProcess,
) -> None:
    body = sample_body("finchpay", "COMPLETE", now())
    response = gateway.post("finchpay-walled", body, params={"token": TOKEN})
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden_address"}


def test_forwarded_for_is_not_believed_from_an_untrusted_peer(gateway: GatewayProcess) -> None:
    body = sample_body("finchpay", "COMPLETE", now())
    response = gateway.post(
        "finchpay-walled",
        body,
        params={"token": TOKEN},
        headers={"x-forwarded-for": "203.0.113.9"},
    )
    assert response.status_code == 403


def test_forwarded_for_is_believed_from_a_trusted_proxy(tmp_path: Path) -> None:
    config = BASE_CONFIG.replace(
        "max_body_bytes = 1048576", 'max_body_bytes = 1048576\ntrusted_proxies = ["127.0.0.1/32"]'
    )
    proxied = GatewayProcess(tmp_path, config).start()
    try:
        body = sample_body("finchpay", "COMPLETE", now())
        allowed = proxied.post(
            "finchpay-walled",
            body,
            params={"token": TOKEN},
            headers={"x-forwarded-for": "198.51.100.1, 203.0.113.9"},
        )
        spoofed = proxied.post(
            "finchpay-walled",
            sample_body("finchpay", "COMPLETE", now()),
            params={"token": TOKEN},
            headers={"x-forwarded-for": "203.0.113.9, 198.51.100.1"},
        )
    finally:
        proxied.stop()
    # The trusted proxy appended the address it saw last; anything before that is the
    # client's own claim and proves nothing.
    assert allowed.status_code == 200
    assert spoofed.status_code == 403


# 413.


def test_oversized_body_is_413_without_reading_it_all(gateway: GatewayProcess) -> None:
    ten_mib = 10 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection:
        connection.sendall(
            b"POST /webhooks/finfusion-main HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            + f"content-length: {ten_mib}\r\ncontent-type: application/json\r\n\r\n".encode()
            + b"{" * 4096
        )
        # Only 4 KiB of the 10 MiB were sent: an answer now proves the rest was never awaited.
        answer = b""
        while b"payload_too_large" not in answer:
            received = connection.recv(4096)
            if not received:
                break
            answer += received
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"payload_too_large"' in answer


def test_oversized_chunked_body_is_413_once_past_the_limit(gateway: GatewayProcess) -> None:
    # No content-length: the server can only tell by counting, and must stop at the limit.
    chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as connection:
        connection.sendall(
            b"POST /webhooks/finfusion-main HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        while sent < 10 * 1024 * 1024:
            readable, _, _ = select.select([connection], [], [], 0)
            if readable:
                break
            try:
                connection.sendall(chunk)
            except (TimeoutError, ConnectionError):
                break  # the server stopped reading; its answer is waiting
            sent += 65536
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")
    assert sent < 10 * 1024 * 1024


# 422 and quarantine.


def test_authenticated_non_json_is_422_and_quarantined(gateway: GatewayProcess) -> None:
    body = b"this is not json"
    response = gateway.post("finfusion-main", body, headers=signed_finfusion(body))
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_payload"
    assert "$" in response.json()["detail"]
    rows = [payload.headers for payload in gateway.quarantined() if payload.body == body]
    assert len(rows) == 1
    assert "signature" not in msgspec.json.encode(rows[0]).decode()  # proofs of identity: not kept


def test_wrong_shape_is_422_with_the_path(gateway: GatewayProcess) -> None:
    body = b'{"id":"evt_x","type":"payment.succeeded","data":{"object":{"amount":"ten"}}}'
    response = gateway.post("finfusion-main", body, headers=signed_finfusion(body))
    assert response.status_code == 422
    assert "$.data.object.amount" in response.json()["detail"]


def test_unauthenticated_garbage_is_401_not_quarantined(gateway: GatewayProcess) -> None:
    before = gateway.stats()["quarantined"]
    assert gateway.post("finfusion-main", b"garbage").status_code == 401
    assert gateway.stats()["quarantined"] == before


# Checks run in the contract's order.


def test_size_is_checked_before_address_and_signature(gateway: GatewayProcess) -> None:
    response = gateway.post("finchpay-walled", b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413


def test_address_is_checked_before_token(gateway: GatewayProcess) -> None:
    assert gateway.post("finchpay-walled", b"{}").status_code == 403


def test_authentication_is_checked_before_payload(gateway: GatewayProcess) -> None:
    assert gateway.post("finchpay", b"not json", params={"token": "bad"}).status_code == 401


# x-request-id, health, readiness, metrics.


def test_sane_request_id_is_echoed(gateway: GatewayProcess) -> None:
    response = gateway.post("nowhere", b"{}", headers={"x-request-id": "abc-123.DEF_4"})
    assert response.headers["x-request-id"] == "abc-123.DEF_4"
    assert "abc-123.DEF_4" in gateway.logs_once_they_say("abc-123.DEF_4")


@pytest.mark.parametrize("given", ["has space", "x" * 129, "semi;colon", ""])
def test_insane_request_id_is_replaced(gateway: GatewayProcess, given: str) -> None:
    response = gateway.post("nowhere", b"{}", headers={"x-request-id": given})
    returned = response.headers["x-request-id"]
    assert returned != given
    assert 1 <= len(returned) <= 128


def test_every_answer_carries_a_request_id(gateway: GatewayProcess) -> None:
    for response in (
        httpx.get(f"{gateway.base_url}/healthz"),
        httpx.get(f"{gateway.base_url}/no/such/path"),
        gateway.post("finchpay", b"{}"),
    ):
        assert response.headers.get("x-request-id")


def test_health_and_readiness(gateway: GatewayProcess) -> None:
    assert httpx.get(f"{gateway.base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{gateway.base_url}/readyz").json() == {"status": "ready"}


def test_metrics_count_outcomes_per_source(gateway: GatewayProcess) -> None:
    gateway.post("finchpay", b"{}", params={"token": "bad"})
    text = httpx.get(f"{gateway.base_url}/metrics").text
    assert 'finrelay_webhooks_answered_total{outcome="invalid_token",source="finchpay"}' in text
    assert "finrelay_ingress_seconds_bucket" in text
    assert "finrelay_events_stored_total" in text
    assert "no-such-source" not in text  # URL parts never become labels


def test_request_log_line_has_request_and_event_ids(gateway: GatewayProcess) -> None:
    body = sample_body("finchpay", "COMPLETE", now())
    response = gateway.post(
        "finchpay", body, params={"token": TOKEN}, headers={"x-request-id": "trace-77"}
    )
    logs = gateway.logs_once_they_say("trace-77")
    lines = [msgspec.json.decode(line) for line in logs.splitlines() if "trace-77" in line]
    assert lines[0]["event_id"] == response.json()["id"]
    assert lines[0]["outcome"] == "accepted"
    assert lines[0]["source"] == "finchpay"

"""The admin API (docs/reference/admin.md) against a real `gateway serve`: auth, every path,
filters, cursors, the 404s and 422s, and what its log lines leave out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from adapters.source import Secret
from gateway.admin.session import COOKIE_NAME, csrf_token_for, new_session
from tests.admin.support import (
    ADMIN_CONFIG,
    ADMIN_TOKEN,
    AUTH,
    OTHER_ADMIN_TOKEN,
    api,
    post_finchpay,
    wait_for,
)
from tests.service.harness import BASE_CONFIG, GatewayProcess, free_port
from tests.support import TOKEN


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path, ADMIN_CONFIG).start()
    yield process
    process.stop()


def delivered_lines(gateway: GatewayProcess) -> list[dict[str, object]]:
    path = gateway.workdir / "data" / "events.jsonl"
    if not path.exists():
        return []
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines() if line]


def all_delivered(gateway: GatewayProcess) -> bool:
    stats = gateway.stats()
    return stats["pending"] == stats["held"] == stats["dead"] == 0


def attempts_per_delivery(gateway: GatewayProcess) -> list[int]:
    """How many attempts each stored delivery has had."""
    records = gateway.event_records().values()
    return [len(delivery.attempts) for record in records for delivery in record.deliveries]


# Auth.


def test_admin_is_not_found_without_a_token(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, BASE_CONFIG).start()
    try:
        for path in ("/admin/api/events", "/admin/api/openapi.json", "/admin/", "/admin/x"):
            answer = httpx.get(f"{gateway.base_url}{path}", headers=AUTH, timeout=10)
            assert answer.status_code == 404, path
            assert answer.json() == {"error": "not_found"}
    finally:
        gateway.stop()


def test_wrong_or_missing_credentials_are_401(gateway: GatewayProcess) -> None:
    url = f"{gateway.base_url}/admin/api/events"
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer"},
        {"Cookie": f"finrelay_session={ADMIN_TOKEN}"},
        {"Cookie": "finrelay_session=abc.9999999999.forged"},
    ):
        answer = httpx.get(url, headers=headers, timeout=10)
        assert answer.status_code == 401, headers
        assert answer.json() == {"error": "unauthorized"}
    # Unknown paths and writes too: nothing under /admin/api answers without the token.
    assert httpx.get(f"{url}/nope/x", timeout=10).status_code == 401
    assert httpx.post(f"{gateway.base_url}/admin/api/subscribers/audit/pause").status_code == 401
    assert gateway.paused_subscribers() == set()

    for token in (ADMIN_TOKEN, OTHER_ADMIN_TOKEN):  # either token of a rotation
        answer = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 200
        assert answer.json() == {"items": [], "next_cursor": None}
    assert api(gateway, "GET", "/nope").json() == {"error": "not_found"}


def test_the_page_session_cookie_opens_the_api_and_writes_need_its_csrf_token(
    gateway: GatewayProcess,
) -> None:
    session = new_session((Secret(ADMIN_TOKEN), Secret(OTHER_ADMIN_TOKEN)))
    cookie = {"Cookie": f"{COOKIE_NAME}={session.cookie_value}"}
    base = f"{gateway.base_url}/admin/api"
    assert httpx.get(f"{base}/subscribers", headers=cookie, timeout=10).status_code == 200
    # A forged cross-site post carries the cookie but cannot know the CSRF token.
    pause = f"{base}/subscribers/audit/pause"
    for extra in ({}, {"X-CSRF-Token": "guess"}):
        answer = httpx.post(pause, headers={**cookie, **extra}, timeout=10)
        assert answer.status_code == 401
    assert gateway.paused_subscribers() == set()
    answer = httpx.post(
        pause, headers={**cookie, "X-CSRF-Token": csrf_token_for(session)}, timeout=10
    )
    assert answer.json() == {"name": "audit", "state": "paused"}
    assert gateway.paused_subscribers() == {"audit"}  # the read above can see a pause
    # A session signed under other tokens (another gateway's) opens nothing.
    foreign = new_session((Secret("another-gateway-token"),))
    other = {"Cookie": f"{COOKIE_NAME}={foreign.cookie_value}"}
    assert httpx.get(f"{base}/subscribers", headers=other, timeout=10).status_code == 401


def test_paths_no_route_takes_are_json_404s(gateway: GatewayProcess) -> None:
    # A newline in the path: Starlette's Mount patterns (`.*`) stop at it.
    for path in ("/events/%0Aevt", "/events/%0A/replay", "/nothing/here"):
        answer = api(gateway, "GET", path)
        assert answer.status_code == 404, path
        assert answer.json() == {"error": "not_found"}


def test_tokens_and_cookies_never_reach_the_log(gateway: GatewayProcess) -> None:
    api(gateway, "GET", "/events", headers={"x-request-id": "op-check-1"})
    httpx.get(
        f"{gateway.base_url}/admin/api/events",
        headers={"Authorization": "Bearer guessed-token-123", "Cookie": "finrelay_session=c00k1e"},
        timeout=10,
    )
    logs = gateway.logs_once_they_say('"status":401')
    assert '"request_id":"op-check-1"' in logs
    assert '"auth":"bearer"' in logs
    for secret in (ADMIN_TOKEN, OTHER_ADMIN_TOKEN, "guessed-token-123", "c00k1e"):
        assert secret not in logs
    # Nor in the OpenAPI document or any answer.
    assert ADMIN_TOKEN not in api(gateway, "GET", "/openapi.json").text


# Events.


def test_events_filter_by_source_type_subject_status_and_time(gateway: GatewayProcess) -> None:
    post_finchpay(gateway, "pay_a", "COMPLETE")
    post_finchpay(gateway, "pay_b", "ERROR")
    middle = time.time()
    time.sleep(0.05)
    post_finchpay(gateway, "pay_c", "COMPLETE")
    lifecycle = b'{"message":"Account Created","identifier":"ACCOUNT_CREATED","code":1143,'
    lifecycle += b'"accountNumber":"0123456789","requestId":"req-1"}'
    assert gateway.post("lifecycle", lifecycle, params={"token": TOKEN}).status_code == 200

    def subjects(query: str) -> list[str | None]:
        answer = api(gateway, "GET", f"/events?{query}")
        assert answer.status_code == 200, answer.text
        return [item["subject"] for item in answer.json()["items"]]

    assert subjects("source=finchpay") == ["pay_c", "pay_b", "pay_a"]  # newest first
    assert subjects("type=payment.*") == ["pay_c", "pay_b", "pay_a"]
    assert subjects("type=*.failed") == ["pay_b"]
    assert subjects("type=account.created&source=lifecycle") == subjects("source=lifecycle")
    assert len(subjects("source=lifecycle")) == 1
    assert subjects("subject=pay_b") == ["pay_b"]
    assert subjects("status=succeeded") == ["pay_c", "pay_a"]
    assert subjects("status=succeeded&subject=pay_c") == ["pay_c"]
    assert subjects(f"since={middle}&source=finchpay") == ["pay_c"]
    assert subjects(f"until={middle}") == ["pay_b", "pay_a"]
    iso = datetime.fromtimestamp(middle, UTC).isoformat().replace("+00:00", "Z")
    assert subjects(f"until={iso}") == ["pay_b", "pay_a"]
    assert subjects("source=nobody") == []

    item = api(gateway, "GET", "/events?subject=pay_a").json()["items"][0]
    assert set(item) == {"id", "source", "type", "subject", "time", "received_at", "deliveries"}
    assert item["source"] == "finchpay"
    assert item["received_at"].endswith("Z")
    datetime.fromisoformat(item["received_at"])
    assert item["deliveries"]["audit"] in ("pending", "delivered")


def test_a_cursor_walk_never_repeats_or_skips_while_events_arrive(
    gateway: GatewayProcess,
) -> None:
    for number in range(23):
        post_finchpay(gateway, f"pay_{number:03}")
    expected = [f"pay_{number:03}" for number in reversed(range(23))]
    seen: list[str] = []
    cursor = None
    for page in range(10):  # bounded: 23 events at 5 a page is 5 pages
        query = "limit=5" + (f"&cursor={cursor}" if cursor else "")
        body = api(gateway, "GET", f"/events?{query}").json()
        seen += [item["subject"] for item in body["items"]]
        # New events arrive between pages: they are newer than the walk, never in it.
        post_finchpay(gateway, f"new_{page}")
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == expected


def test_event_detail_replay_and_not_found(gateway: GatewayProcess) -> None:
    post_finchpay(gateway, "pay_detail")
    wait_for(lambda: all_delivered(gateway))
    event_id = api(gateway, "GET", "/events").json()["items"][0]["id"]

    detail = api(gateway, "GET", f"/events/{event_id}").json()
    assert detail["event"]["id"] == event_id
    assert detail["event"]["data"]["id"] == "pay_detail"
    (delivery,) = detail["deliveries"]
    assert delivery["subscriber"] == "audit"
    assert delivery["state"] == "delivered"
    assert delivery["next_attempt_at"] is None
    (attempt,) = delivery["attempts"]
    assert set(attempt) == {"at", "duration_ms", "outcome", "status_code", "error"}
    assert attempt["outcome"] == "delivered"
    assert attempt["at"].endswith("Z")

    for sent, body in enumerate((None, b"{}", b'{"subscribers": ["audit"]}'), start=2):
        answer = api(gateway, "POST", f"/events/{event_id}/replay", content=body)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {"replayed": 1}
        wait_for(lambda sent=sent: len(delivered_lines(gateway)) == sent)
    assert {line["webhook-id"] for line in delivered_lines(gateway)} == {event_id}

    unknown = api(gateway, "POST", f"/events/{event_id}/replay", json={"subscribers": ["nope"]})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_subscriber"
    for method, path in (("GET", "/events/evt_missing"), ("POST", "/events/evt_missing/replay")):
        answer = api(gateway, method, path)
        assert answer.status_code == 404
        assert answer.json() == {"error": "not_found"}


def test_bad_parameters_are_422_with_a_reason(gateway: GatewayProcess) -> None:
    for path in (
        "/events?limit=0",
        "/events?limit=501",
        "/events?limit=ten",
        "/events?since=yesterday",
        "/events?until=2026-13-01",
        "/events?cursor=not-a-cursor",
        "/events?cursor=WzFd",  # base64 of [1]: JSON, but not a cursor
        "/dead-letters?limit=-1",
        "/dead-letters?cursor=%%%",
        "/quarantine?limit=1000",
    ):
        answer = api(gateway, "GET", path)
        assert answer.status_code == 422, path
        body = answer.json()
        assert body["error"] == "invalid_request"
        assert body["detail"].split(":")[0] in ("limit", "since", "until", "cursor"), body
    for content in (b"{not json", b'{"subscribers": "audit"}', b'{"extra": 1}'):
        post_finchpay(gateway, "pay_422")
        event_id = api(gateway, "GET", "/events").json()["items"][0]["id"]
        answer = api(gateway, "POST", f"/events/{event_id}/replay", content=content)
        assert answer.status_code == 422, content
        assert answer.json()["detail"].startswith("body")
    redrive = api(gateway, "POST", "/dead-letters/redrive", json={"since": "soon"})
    assert redrive.status_code == 422
    assert api(gateway, "DELETE", "/quarantine/abc").status_code == 422
    assert api(gateway, "GET", "/events?limit=500").status_code == 200


# Subscribers, dead letters, quarantine.


def test_dead_letters_page_and_redrive(tmp_path: Path) -> None:
    # A subscriber nobody listens on, one retry: two refused connections and it is dead.
    config = (
        ADMIN_CONFIG
        + f"""
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
    )
    gateway = GatewayProcess(tmp_path, config).start()
    try:
        for number in range(5):
            post_finchpay(gateway, f"pay_dead_{number}")
        wait_for(
            lambda: gateway.stats()["dead"] == 5,
            timeout=20,
        )
        walked: list[str] = []
        cursor = None
        for _ in range(5):
            query = "subscriber=ledger&limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = api(gateway, "GET", f"/dead-letters?{query}").json()
            walked += [item["event_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(walked) == len(set(walked)) == 5
        item = api(gateway, "GET", "/dead-letters?limit=1").json()["items"][0]
        assert set(item) == {"event_id", "subscriber", "attempts", "last_error", "dead_at"}
        assert item["subscriber"] == "ledger"
        assert item["attempts"] == 2
        assert item["last_error"]
        assert api(gateway, "GET", "/dead-letters?subscriber=audit").json()["items"] == []

        ledger = next(
            s for s in api(gateway, "GET", "/subscribers").json() if s["name"] == "ledger"
        )
        assert ledger["dead"] == 5
        assert ledger["kind"] == "http"

        unknown = api(gateway, "POST", "/dead-letters/redrive", json={"subscriber": "nope"})
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "unknown_subscriber"
        none_yet = api(gateway, "POST", "/dead-letters/redrive", json={"until": 1.0})
        assert none_yet.json() == {"redriven": 0}
        answer = api(gateway, "POST", "/dead-letters/redrive", json={"subscriber": "ledger"})
        assert answer.status_code == 200
        assert answer.json() == {"redriven": 5}
        # Pending again with a fresh schedule: the dispatcher tries each once more.
        wait_for(lambda: sum(attempts_per_delivery(gateway)) > 10, timeout=20)
    finally:
        gateway.stop()


def test_subscribers_list_pause_and_resume(gateway: GatewayProcess) -> None:
    (audit,) = api(gateway, "GET", "/subscribers").json()
    assert audit == {
        "name": "audit",
        "kind": "file",
        "state": "active",
        "pending": 0,
        "oldest_pending_seconds": None,
        "dead": 0,
    }
    paused = api(gateway, "POST", "/subscribers/audit/pause")
    assert paused.status_code == 200
    assert paused.json() == {"name": "audit", "state": "paused"}
    time.sleep(1.5)  # every dispatcher re-reads pauses within a poll interval (1 s)
    post_finchpay(gateway, "pay_paused")
    time.sleep(1.5)
    (audit,) = api(gateway, "GET", "/subscribers").json()
    assert audit["state"] == "paused"
    assert audit["pending"] == 1
    assert audit["oldest_pending_seconds"] >= 1.0
    assert attempts_per_delivery(gateway) == [0]
    assert delivered_lines(gateway) == []

    resumed = api(gateway, "POST", "/subscribers/audit/resume")
    assert resumed.json() == {"name": "audit", "state": "active"}
    wait_for(lambda: len(delivered_lines(gateway)) == 1)
    for action in ("pause", "resume"):
        answer = api(gateway, "POST", f"/subscribers/nope/{action}")
        assert answer.status_code == 404
        assert answer.json()["error"] == "unknown_subscriber"


def test_resume_re_enables_a_disabled_subscriber(gateway: GatewayProcess) -> None:
    # What a 410 Gone leaves in the store (gateway/delivery/circuit.py).
    gateway.save_subscriber_circuit("audit", b'{"state":"disabled"}')
    assert api(gateway, "GET", "/subscribers").json()[0]["state"] == "disabled"
    assert api(gateway, "POST", "/subscribers/audit/resume").json()["state"] == "active"
    assert api(gateway, "GET", "/subscribers").json()[0]["state"] == "active"


def test_quarantine_list_reprocess_and_drop(gateway: GatewayProcess) -> None:
    bad = b'{"message":"Account Credited","identifier":"ACCOUNT_CREDITED","code":"3023"}'
    for _ in range(3):
        assert gateway.post("lifecycle", bad, params={"token": TOKEN}).status_code == 422
    first = api(gateway, "GET", "/quarantine?limit=2").json()
    second = api(gateway, "GET", f"/quarantine?limit=2&cursor={first['next_cursor']}").json()
    assert second["next_cursor"] is None
    ids = [item["id"] for item in first["items"] + second["items"]]
    assert ids == sorted(ids, reverse=True)  # newest first, each once
    assert len(set(ids)) == 3
    item = first["items"][0]
    assert set(item) == {"id", "source", "received_at", "verification", "error"}
    assert item["source"] == "lifecycle"

    answer = api(gateway, "POST", "/quarantine/reprocess")
    assert answer.status_code == 200
    assert answer.json() == {"released": 0, "still_invalid": 3}

    dropped = api(gateway, "DELETE", f"/quarantine/{ids[0]}")
    assert dropped.status_code == 204
    assert dropped.content == b""
    again = api(gateway, "DELETE", f"/quarantine/{ids[0]}")
    assert again.status_code == 404
    assert again.json() == {"error": "not_found"}
    assert len(api(gateway, "GET", "/quarantine").json()["items"]) == 2


def test_openapi_describes_every_path(gateway: GatewayProcess) -> None:
    document = api(gateway, "GET", "/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/admin/api/events",
        "/admin/api/events/{event_id}",
        "/admin/api/events/{event_id}/replay",
        "/admin/api/dead-letters",
        "/admin/api/dead-letters/redrive",
        "/admin/api/subscribers",
        "/admin/api/subscribers/{name}/pause",
        "/admin/api/subscribers/{name}/resume",
        "/admin/api/quarantine",
        "/admin/api/quarantine/reprocess",
        "/admin/api/quarantine/{quarantine_id}",
        "/admin/api/openapi.json",
    }
    schemas = document["components"]["schemas"]
    assert schemas["EventSummary"]["required"] == [
        "id",
        "source",
        "type",
        "subject",
        "time",
        "received_at",
        "deliveries",
    ]

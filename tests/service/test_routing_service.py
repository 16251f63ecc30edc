"""Config-file routing end to end: an event reaches exactly the subscribers its routes name, and
the others get nothing (README: Configuration, `[[routes]]`)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from adapters import finfusion
from adapters.samples import sample_body
from tests.service.harness import GatewayProcess
from tests.support import SECRET, TOKEN

CONFIG = f"""
[server]
host = "127.0.0.1"
port = 0

[store]
url = "sqlite:///./data/gateway.db"

[sources.fusion]
adapter = "finfusion"
secret = "{SECRET}"

[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"

[sources.lifecycle]
adapter = "account_lifecycle"
token = "{TOKEN}"
currency = "NGN"

[subscribers.everything]
kind = "file"
path = "./data/everything.jsonl"

[subscribers.payments]
kind = "file"
path = "./data/payments.jsonl"

[subscribers.fusion-only]
kind = "file"
path = "./data/fusion-only.jsonl"

[subscribers.fusion-cards]
kind = "file"
path = "./data/fusion-cards.jsonl"

[subscribers.settled]
kind = "file"
path = "./data/settled.jsonl"

[subscribers.transfers]
kind = "file"
path = "./data/transfers.jsonl"

[[routes]]
subscribers = ["everything"]

[[routes]]
types = ["payment.*"]
subscribers = ["payments"]

[[routes]]
sources = ["fusion"]
subscribers = ["fusion-only"]

[[routes]]
sources = ["fusion"]
types = ["card.*"]
subscribers = ["fusion-cards", "everything"]

[[routes]]
sources = ["finchpay", "lifecycle"]
types = ["payment.succeeded", "account.cred*"]
subscribers = ["settled", "payments"]

[[routes]]
types = ["transfer.*"]
subscribers = ["transfers"]
"""

# (source, adapter, provider type, the canonical type it becomes)
POSTED = [
    ("fusion", "finfusion", "payment.succeeded", "payment.succeeded"),
    ("fusion", "finfusion", "card.created", "card.created"),
    ("fusion", "finfusion", "account.created", "account.created"),
    ("finchpay", "finchpay", "COMPLETE", "payment.succeeded"),
    ("finchpay", "finchpay", "HOLD", "payment.processing"),
    ("lifecycle", "account_lifecycle", "ACCOUNT_CREDITED", "account.credited"),
    ("lifecycle", "account_lifecycle", "ACCOUNT_CREATED", "account.created"),
]

# Who gets what, worked out by hand from the routes above.
EXPECTED = {
    "everything": {(source, kind) for source, _, _, kind in POSTED},
    "payments": {
        ("fusion", "payment.succeeded"),
        ("finchpay", "payment.succeeded"),
        ("finchpay", "payment.processing"),
        ("lifecycle", "account.credited"),  # by the last-but-one route, not by its type
    },
    "fusion-only": {
        ("fusion", "payment.succeeded"),
        ("fusion", "card.created"),
        ("fusion", "account.created"),
    },
    "fusion-cards": {("fusion", "card.created")},
    "settled": {("finchpay", "payment.succeeded"), ("lifecycle", "account.credited")},
    "transfers": set(),
}


def post(gateway: GatewayProcess, source: str, adapter: str, provider_type: str) -> str:
    now = datetime.now(UTC)
    body = sample_body(adapter, provider_type, now)
    if adapter == "finfusion":
        response = gateway.post(source, body, headers=finfusion.sign_finfusion(body, SECRET, now))
    else:
        response = gateway.post(source, body, params={"token": TOKEN})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    event_id: str = response.json()["id"]
    return event_id


def received(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    events = [msgspec.json.decode(line)["event"] for line in path.read_bytes().splitlines()]
    return [(event["source"].removeprefix("/sources/"), event["type"]) for event in events]


def test_each_event_reaches_exactly_the_subscribers_its_routes_name(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, CONFIG).start()
    try:
        ids = [post(gateway, source, adapter, kind) for source, adapter, kind, _ in POSTED]
        assert len(set(ids)) == len(POSTED)
        expected_total = sum(len(events) for events in EXPECTED.values())
        deadline = time.monotonic() + 30
        while True:
            stats = gateway.stats()
            done = stats["delivered"]
            if done >= expected_total:
                break
            assert time.monotonic() < deadline, f"{done} of {expected_total} delivered in 30 s"
            time.sleep(0.05)
        # Nothing more is on its way: every delivery the routes made is done.
        stats = gateway.stats()
        total = sum(stats[state] for state in ("pending", "held", "delivered", "dead"))
        assert total == expected_total
    finally:
        gateway.stop()

    data = tmp_path / "data"
    for name, expected in EXPECTED.items():
        lines = received(data / f"{name}.jsonl")
        assert set(lines) == expected, name
        assert all(count == 1 for count in Counter(lines).values()), f"{name}: {lines}"

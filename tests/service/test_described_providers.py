"""Providers described in the config file, and presets, against a real `gateway serve`
(docs/reference/providers.md): a provider of the test's own, defined in TOML and signed as its
description says; a batch provider (`each`); an unsigned one (`scheme = "none"`, a token); and the
Stripe preset, signed as Stripe signs (stripe-python builds the header). Then the commands that know
them: `gateway providers`, `gateway sample`, `gateway normalize --config`.

One gateway, in one process, serves the whole module: each test posts events of its own (new
ids) and looks only at those."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import stripe
from square.utils import webhooks_helper as square_helper

from tests.service.harness import REPO, GatewayProcess

LEDGERLY_SECRET = "ledgerly-current-secret-4f1c"
LEDGERLY_OLD_SECRET = "ledgerly-previous-secret-9e2a"
# Batchly's secret is base64 of the HMAC key (`key = "base64"`).
BATCHLY_KEY = b"batchly-raw-key-bytes-0123456789"
BATCHLY_SECRET = b64encode(BATCHLY_KEY).decode()
PINGLY_TOKEN = "pingly-token-5d7e"
STRIPE_SECRET = "whsec_test_stripe_preset_Zk3XbQ9rT2"
SQUARE_KEY = "square-signature-key-3Hq8"
# What Square was told to call (behind a proxy: not the URL the gateway sees), and signs.
SQUARE_URL = "https://hooks.example.com/webhooks/square-main"

CONFIG = f"""
[server]
host = "127.0.0.1"
port = 0

[store]
url = "sqlite:///./data/gateway.db"

# A provider of this test's own: Stripe-like pairs, its time in a header of its own.
[providers.ledgerly.signature]
scheme = "hmac"
algorithm = "sha256"
header = "X-Ledgerly-Mac"
format = "t={{timestamp}},v1={{signature}}"
encoding = "hex"
signed = "{{timestamp}}.{{body}}"
timestamp_unit = "s"
key = "utf8"

[providers.ledgerly.event]
id = "id"
type = "type"
time = "created_at"
subject = "data.object.id"
status = "data.object.status"
amount = "data.object.amount"
amount_unit = "minor"
currency = "data.object.currency"
reference = "data.object.reference"

[providers.ledgerly.types]
"payment.completed" = "payment.succeeded"
"payment.declined" = "payment.failed"
"payout.*" = "transfer.*"

# A batch provider: several events a request, signed once (SHA-512, base64, over the body).
[providers.batchly.signature]
scheme = "hmac"
algorithm = "sha512"
header = "X-Batchly-Hmac"
format = "sha512={{signature}}"
encoding = "base64"
key = "base64"

[providers.batchly.event]
each = "events"
id = "event_id"
type = "kind"
subject = "resource.id"
amount = "resource.amount"
amount_unit = "major"
currency = "resource.currency"

[providers.batchly.types]
"charge.paid" = "payment.succeeded"

# A provider that signs the URL it was told to call (Square's way), SHA-1 for a change.
[providers.urlly.signature]
scheme = "hmac"
algorithm = "sha1"
header = "X-Urlly-Digest"
signed = "{{url}}{{body}}"

[providers.urlly.event]
id = "id"
type = "type"

[providers.urlly.types]
"paid" = "payment.succeeded"

# An unsigned provider: its sources authenticate with a token.
[providers.pingly.signature]
scheme = "none"

[providers.pingly.event]
id = "header:X-Pingly-Delivery"
type = "event"

[providers.pingly.types]
"account.opened" = "account.created"

[sources.ledgerly-main]
adapter = "ledgerly"
secrets = ["{LEDGERLY_SECRET}", "{LEDGERLY_OLD_SECRET}"]
tolerance_seconds = 300

[sources.batchly]
adapter = "batchly"
secret = "{BATCHLY_SECRET}"

[sources.pingly]
adapter = "pingly"
token = "{PINGLY_TOKEN}"

[sources.urlly]
adapter = "urlly"
secret = "urlly-secret"
public_url = "https://proxy.example.com/in/urlly"

[sources.stripe-main]
adapter = "stripe"
secret = "{STRIPE_SECRET}"

[sources.gocardless-main]
adapter = "gocardless"
secret = "gocardless-webhook-secret"

[sources.square-main]
adapter = "square"
secret = "{SQUARE_KEY}"
public_url = "{SQUARE_URL}"

[subscribers.audit]
kind = "file"
path = "./data/events.jsonl"

[[routes]]
subscribers = ["audit"]
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("described"), CONFIG).start()
    yield process
    process.stop()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


# Ledgerly, signed as its description says.


def ledgerly_body(provider_type: str | None = "payment.completed", **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "id": new_id("evt"),
        "created_at": int(time.time()),
        "data": {
            "object": {
                "id": new_id("pay"),
                "status": "completed",
                "amount": 12345,
                "currency": "gbp",
                "reference": "INV-42",
            }
        },
        **fields,
    }
    if provider_type is not None:
        body["type"] = provider_type
    return json.dumps(body).encode()


def ledgerly_headers(
    body: bytes, secret: str = LEDGERLY_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    sent = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), sent.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Ledgerly-Mac": f"t={sent},v1={digest}", "content-type": "application/json"}


def post_ledgerly(gateway: GatewayProcess, body: bytes, **signing: Any) -> httpx.Response:
    return gateway.post("ledgerly-main", body, headers=ledgerly_headers(body, **signing))


def stored_event(gateway: GatewayProcess, event_id: str) -> dict[str, Any]:
    record = gateway.event_record(event_id)
    assert record is not None, f"{event_id} is not stored"
    event: dict[str, Any] = msgspec.json.decode(record.body)
    return event


def stored_count(gateway: GatewayProcess) -> int:
    return gateway.stats()["events"]


def test_a_described_provider_is_verified_and_normalized(gateway: GatewayProcess) -> None:
    body = ledgerly_body()
    answer = post_ledgerly(gateway, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted"
    event = stored_event(gateway, answer.json()["id"])
    sent = json.loads(body)
    assert event["type"] == "payment.succeeded"
    assert event["provider"] == "ledgerly"
    assert event["providertype"] == "payment.completed"
    assert event["providerid"] == sent["id"]
    assert event["subject"] == sent["data"]["object"]["id"]
    assert event["source"] == "/sources/ledgerly-main"
    assert event["verification"] == "signature"
    assert event["data"]["kind"] == "payment"
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["provider_status"] == "completed"
    assert event["data"]["amount"] == {"value": "123.45", "currency": "GBP"}
    assert event["data"]["reference"] == "INV-42"
    assert event["data"]["provider_payload"] == sent
    # The provider's retry of the same event.
    again = post_ledgerly(gateway, body)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "id": answer.json()["id"]}


def test_a_prefix_maps_every_type_that_starts_with_it(gateway: GatewayProcess) -> None:
    answer = post_ledgerly(gateway, ledgerly_body("payout.succeeded"))
    assert answer.status_code == 200, answer.text
    assert stored_event(gateway, answer.json()["id"])["type"] == "transfer.succeeded"


def test_a_request_signed_with_the_previous_secret_verifies(gateway: GatewayProcess) -> None:
    """The source lists both secrets while the provider rotates: either one verifies."""
    answer = post_ledgerly(gateway, ledgerly_body(), secret=LEDGERLY_OLD_SECRET)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted"
    # Both signatures in one header (a provider signing with the old and the new secret).
    body = ledgerly_body()
    sent = str(int(time.time()))
    old, new = (
        hmac.new(secret.encode(), sent.encode() + b"." + body, hashlib.sha256).hexdigest()
        for secret in ("not-a-secret-of-this-source", LEDGERLY_SECRET)
    )
    both = gateway.post(
        "ledgerly-main", body, headers={"X-Ledgerly-Mac": f"t={sent},v1={old},v1={new}"}
    )
    assert both.status_code == 200, both.text


def test_a_request_signed_with_another_secret_is_refused(gateway: GatewayProcess) -> None:
    before = stored_count(gateway)
    answer = post_ledgerly(gateway, ledgerly_body(), secret="some-other-secret")
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_signature"
    assert stored_count(gateway) == before


def test_a_tampered_body_is_refused(gateway: GatewayProcess) -> None:
    before = stored_count(gateway)
    body = ledgerly_body()
    headers = ledgerly_headers(body)
    tampered = body.replace(b"12345", b"99345")
    assert tampered != body
    answer = gateway.post("ledgerly-main", tampered, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_signature"
    # Neither a missing header nor one of another shape gets further.
    assert gateway.post("ledgerly-main", body).status_code == 401
    malformed = gateway.post("ledgerly-main", body, headers={"X-Ledgerly-Mac": "v1=abc"})
    assert malformed.status_code == 401
    assert stored_count(gateway) == before


@pytest.mark.parametrize("seconds", [-600, 600], ids=["expired", "from_the_future"])
def test_a_timestamp_outside_the_tolerance_is_refused(
    gateway: GatewayProcess, seconds: int
) -> None:
    before = stored_count(gateway)
    answer = post_ledgerly(gateway, ledgerly_body(), timestamp=int(time.time()) + seconds)
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_signature"
    assert stored_count(gateway) == before


def test_an_unknown_type_is_stored_unmapped(gateway: GatewayProcess) -> None:
    answer = post_ledgerly(gateway, ledgerly_body("invoice.finalized"))
    assert answer.status_code == 200, answer.text
    event = stored_event(gateway, answer.json()["id"])
    assert event["type"] == "ledgerly.invoice.finalized"
    assert event["data"]["kind"] == "unmapped"
    assert event["data"]["status"] is None


def test_a_body_without_a_type_is_quarantined_without_its_signature(
    gateway: GatewayProcess,
) -> None:
    body = ledgerly_body(None)
    before = len(gateway.quarantined())
    answer = post_ledgerly(gateway, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_payload"
    quarantined = gateway.quarantined()
    assert len(quarantined) == before + 1
    payload = quarantined[-1]
    assert (payload.source, payload.body, payload.verification) == (
        "ledgerly-main",
        body,
        "signature",
    )
    # Authenticated already: the proof is not kept, what the adapter may read again is.
    assert "x-ledgerly-mac" not in payload.headers
    assert payload.headers["content-type"] == "application/json"


def test_a_body_that_is_not_json_is_quarantined(gateway: GatewayProcess) -> None:
    before = len(gateway.quarantined())
    answer = post_ledgerly(gateway, b"<xml>not json</xml>")
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_payload"
    assert len(gateway.quarantined()) == before + 1


# Batchly: several events a request.


def batchly_event(kind: str | None = "charge.paid", amount: str = "10.50") -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": new_id("bev"),
        "resource": {"id": new_id("ch"), "amount": amount, "currency": "EUR"},
    }
    if kind is not None:
        event["kind"] = kind
    return event


def post_batchly(gateway: GatewayProcess, events: list[dict[str, Any]]) -> httpx.Response:
    body = json.dumps({"events": events, "meta": {"count": len(events)}}).encode()
    digest = hmac.new(BATCHLY_KEY, body, hashlib.sha512).digest()
    signature = b64encode(digest).decode()
    return gateway.post("batchly", body, headers={"X-Batchly-Hmac": f"sha512={signature}"})


def test_a_batch_is_stored_as_its_events_each_with_its_own_id(gateway: GatewayProcess) -> None:
    first, second, third = batchly_event(), batchly_event("charge.refunded"), batchly_event()
    answer = post_batchly(gateway, [first, second])
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted"
    ids = answer.json()["ids"]
    assert len(ids) == len(set(ids)) == 2
    events = [stored_event(gateway, event_id) for event_id in ids]
    assert [event["type"] for event in events] == ["payment.succeeded", "batchly.charge.refunded"]
    assert [event["providerid"] for event in events] == [first["event_id"], second["event_id"]]
    assert events[0]["data"]["amount"] == {"value": "10.50", "currency": "EUR"}
    # Each event's own JSON is its provider payload, not the whole batch.
    assert events[0]["data"]["provider_payload"] == first

    # The provider sends the second again with a new one: the new one is stored, the other
    # is a duplicate of what is stored; the whole request again is a duplicate.
    retry = post_batchly(gateway, [second, third])
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "accepted"
    assert retry.json()["ids"][0] == ids[1]
    assert stored_event(gateway, retry.json()["ids"][1])["providerid"] == third["event_id"]
    again = post_batchly(gateway, [second, third])
    assert again.json() == {"status": "duplicate", "ids": retry.json()["ids"]}


def test_a_batch_with_an_event_without_type_is_quarantined_whole(
    gateway: GatewayProcess,
) -> None:
    before = stored_count(gateway)
    answer = post_batchly(gateway, [batchly_event(), batchly_event(None)])
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_payload"
    assert stored_count(gateway) == before
    payload = gateway.quarantined()[-1]
    assert payload.source == "batchly"
    assert "x-batchly-hmac" not in payload.headers


def test_a_tampered_batch_is_refused(gateway: GatewayProcess) -> None:
    body = json.dumps({"events": [batchly_event()]}).encode()
    digest = b64encode(hmac.new(BATCHLY_KEY, body, hashlib.sha512).digest()).decode()
    answer = gateway.post(
        "batchly",
        body.replace(b"10.50", b"99.50"),
        headers={"X-Batchly-Hmac": f"sha512={digest}"},
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_signature"


def test_reprocess_releases_a_quarantined_batch_as_its_events(gateway: GatewayProcess) -> None:
    """A batch kept in quarantine (as an older gateway, or one whose description was fixed
    since, left it) becomes its several events, each with its own id, in one release."""
    events = [batchly_event(), batchly_event("charge.voided")]
    body = json.dumps({"events": events}).encode()
    quarantine_id = gateway.with_store(
        lambda store: store.quarantine(
            source="batchly",
            received_at=time.time(),
            body=body,
            headers={},
            verification="signature",
            error="the event type is missing",
        )
    )
    result = gateway.gateway_cli("reprocess")
    mine = [
        line
        for line in result.stdout.splitlines()
        if line.startswith(f"quarantine {quarantine_id}:")
    ]
    assert len(mine) == 2, result.stdout
    assert all(": accepted as evt_" in line for line in mine), mine
    ids = [line.partition(" as ")[2].split(" ")[0] for line in mine]
    stored = [stored_event(gateway, event_id) for event_id in ids]
    assert [event["providerid"] for event in stored] == [event["event_id"] for event in events]
    assert [event["type"] for event in stored] == ["payment.succeeded", "batchly.charge.voided"]
    assert [event["verification"] for event in stored] == ["signature", "signature"]
    assert quarantine_id not in {payload.id for payload in gateway.quarantined()}


# Pingly: no signature, a token.


def test_an_unsigned_provider_needs_its_sources_token(gateway: GatewayProcess) -> None:
    body = json.dumps({"event": "account.opened", "account": "acc_1"}).encode()
    delivery = {"X-Pingly-Delivery": new_id("dlv")}
    refused = gateway.post("pingly", body, headers=delivery)
    assert refused.status_code == 401
    assert refused.json() == {"error": "invalid_token"}
    wrong = gateway.post("pingly", body, headers=delivery, params={"token": "guess"})
    assert wrong.status_code == 401
    answer = gateway.post("pingly", body, headers=delivery, params={"token": PINGLY_TOKEN})
    assert answer.status_code == 200, answer.text
    event = stored_event(gateway, answer.json()["id"])
    assert event["type"] == "account.created"
    assert event["verification"] == "token"
    assert event["providerid"] == delivery["X-Pingly-Delivery"]


# The Stripe preset, signed as Stripe signs.


def stripe_body(provider_type: str = "payment_intent.succeeded") -> bytes:
    return json.dumps(
        {
            "id": new_id("evt"),
            "object": "event",
            "type": provider_type,
            "created": int(time.time()),
            "livemode": False,
            "data": {
                "object": {
                    "id": new_id("pi"),
                    "object": "payment_intent",
                    "amount": 2000,
                    "currency": "usd",
                    "status": "succeeded",
                }
            },
        }
    ).encode()


def stripe_header(body: bytes, secret: str = STRIPE_SECRET, at: int | None = None) -> str:
    header: str = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, at or int(time.time())
    )
    return header


def test_the_stripe_preset_accepts_what_stripe_signs(gateway: GatewayProcess) -> None:
    body = stripe_body()
    header = stripe_header(body)
    # The referee: Stripe's own library verifies what is about to be posted.
    stripe.WebhookSignature.verify_header(body, header, STRIPE_SECRET, tolerance=300)
    answer = gateway.post("stripe-main", body, headers={"Stripe-Signature": header})
    assert answer.status_code == 200, answer.text
    event = stored_event(gateway, answer.json()["id"])
    sent = json.loads(body)
    assert event["type"] == "payment.succeeded"
    assert event["provider"] == "stripe"
    assert event["providerid"] == sent["id"]
    assert event["subject"] == sent["data"]["object"]["id"]
    assert event["data"]["amount"] == {"value": "20.00", "currency": "USD"}


def test_the_stripe_preset_refuses_what_stripe_would(gateway: GatewayProcess) -> None:
    before = stored_count(gateway)
    body = stripe_body()
    wrong_secret = stripe_header(body, "whsec_not_this_sources")
    stale = stripe_header(body, at=int(time.time()) - 3600)
    for header, posted in ((wrong_secret, body), (stale, body), (stripe_header(body), body + b" ")):
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.WebhookSignature.verify_header(posted, header, STRIPE_SECRET, tolerance=300)
        answer = gateway.post("stripe-main", posted, headers={"Stripe-Signature": header})
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_signature"
    assert stored_count(gateway) == before


# The Square preset: it signs the URL it posts to (`{url}`), the source's public_url.


def square_body() -> bytes:
    payment_id = new_id("pay")
    return json.dumps(
        {
            "merchant_id": "ML8M1AQ1GQG2K",
            "type": "payment.updated",
            "event_id": str(uuid.uuid4()),
            "created_at": "2026-12-07T10:00:00.000Z",
            "data": {
                "type": "payment",
                "id": payment_id,
                "object": {
                    "payment": {
                        "id": payment_id,
                        "status": "COMPLETED",
                        "amount_money": {"amount": 1500, "currency": "USD"},
                    }
                },
            },
        }
    ).encode()


def square_signature(body: bytes, url: str = SQUARE_URL) -> str:
    digest = hmac.new(SQUARE_KEY.encode(), url.encode() + body, hashlib.sha256).digest()
    return b64encode(digest).decode()


def test_the_square_preset_verifies_the_url_square_was_given(gateway: GatewayProcess) -> None:
    body = square_body()
    signature = square_signature(body)
    # The referee: Square's own library accepts what is about to be posted...
    assert square_helper.verify_signature(
        request_body=body.decode(),
        signature_header=signature,
        signature_key=SQUARE_KEY,
        notification_url=SQUARE_URL,
    )
    answer = gateway.post("square-main", body, headers={"x-square-hmacsha256-signature": signature})
    assert answer.status_code == 200, answer.text
    event = stored_event(gateway, answer.json()["id"])
    assert event["type"] == "payment.succeeded"
    assert event["data"]["amount"] == {"value": "15.00", "currency": "USD"}
    # ...and refuses a signature over the URL the gateway itself is called by.
    other_url = f"{gateway.base_url}/webhooks/square-main"
    signed_elsewhere = square_signature(square_body(), other_url)
    assert not square_helper.verify_signature(
        request_body=body.decode(),
        signature_header=signed_elsewhere,
        signature_key=SQUARE_KEY,
        notification_url=SQUARE_URL,
    )
    refused = gateway.post(
        "square-main", body, headers={"x-square-hmacsha256-signature": signed_elsewhere}
    )
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_signature"


# The commands that know them.


def test_providers_lists_builtins_presets_and_the_configs_own(gateway: GatewayProcess) -> None:
    result = gateway.gateway_cli("providers", "--json")
    assert result.returncode == 0, result.stderr
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {entry["name"]: entry for entry in listed}
    assert [entry["name"] for entry in listed] == sorted(by_name)
    assert by_name["ledgerly"] == {"name": "ledgerly", "origin": "config", "scheme": "hmac"}
    assert by_name["batchly"] == {"name": "batchly", "origin": "config", "scheme": "hmac"}
    assert by_name["pingly"] == {"name": "pingly", "origin": "config", "scheme": "none"}
    assert by_name["stripe"] == {"name": "stripe", "origin": "preset", "scheme": "hmac"}
    assert by_name["finfusion"] == {"name": "finfusion", "origin": "builtin", "scheme": "hmac"}
    assert by_name["finchpay"] == {"name": "finchpay", "origin": "builtin", "scheme": "none"}
    presets = {"stripe", "gocardless", "square", "razorpay"}
    assert presets <= {name for name, entry in by_name.items() if entry["origin"] == "preset"}
    # The same, for a person: name, origin, scheme, tab-separated.
    text = gateway.gateway_cli("providers")
    assert text.returncode == 0, text.stderr
    assert "ledgerly\tconfig\thmac" in text.stdout.splitlines()


def test_a_described_provider_replaces_a_preset_of_its_name(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        """
        [providers.stripe.signature]
        scheme = "none"

        [providers.stripe.event]
        type = "kind"

        [sources.stripe-like]
        adapter = "stripe"
        token = "t0ken"
        """
    )
    result = cli("providers", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    by_name = {entry["name"]: entry for entry in map(json.loads, result.stdout.splitlines())}
    assert by_name["stripe"] == {"name": "stripe", "origin": "config", "scheme": "none"}
    assert by_name["square"]["origin"] == "preset"


def test_sample_posts_a_preset_and_a_described_providers_webhook(
    gateway: GatewayProcess,
) -> None:
    for adapter, source in (
        ("stripe", "stripe-main"),
        # Its type joins two fields: the preset's `[preset.samples]` says which.
        ("gocardless", "gocardless-main"),
        ("ledgerly", "ledgerly-main"),
        # Signed over the source's public_url, though posted to the gateway's own URL.
        ("urlly", "urlly"),
        ("batchly", "batchly"),
        ("pingly", "pingly"),
    ):
        result = gateway.gateway_cli(
            "sample", adapter, "--to", f"{gateway.base_url}/webhooks/{source}"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"accepted"' in result.stdout
        assert result.stderr == ""
    # A canonical type: the preset's spelling of it is sent.
    result = gateway.gateway_cli(
        "sample", "stripe", "payment.failed", "--to", f"{gateway.base_url}/webhooks/stripe-main"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    event_id = json.loads(result.stdout.partition(" -> 200 ")[2])["id"]
    assert stored_event(gateway, event_id)["type"] == "payment.failed"


def test_sample_of_a_type_the_adapter_does_not_know_says_it_is_stored_unmapped(
    gateway: GatewayProcess,
) -> None:
    result = gateway.gateway_cli(
        "sample",
        "stripe",
        "customer.created",
        "--to",
        f"{gateway.base_url}/webhooks/stripe-main",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.startswith(
        "note: stripe has no canonical type for 'customer.created': it is stored unmapped, as"
        " stripe.customer.created (types it knows: payment_intent.created,"
    )
    # The preset's own types, every one of them: what the user probably meant is among them.
    assert all(kind in result.stderr for kind in ("payment_intent.succeeded", "payout.paid"))
    event_id = json.loads(result.stdout.partition(" -> 200 ")[2])["id"]
    assert stored_event(gateway, event_id)["type"] == "stripe.customer.created"


def test_sample_names_the_adapters_and_refuses_an_unknown_one(gateway: GatewayProcess) -> None:
    help_text = cli("sample", "--help").stdout
    for name in ("finfusion", "stripe", "gocardless", "square", "razorpay"):
        assert name in help_text
    result = gateway.gateway_cli("sample", "ledgerlu", "--to", gateway.base_url)
    assert result.returncode == 2
    assert "no adapter named 'ledgerlu' (did you mean \"ledgerly\"?)" in result.stderr


def test_normalize_reads_a_described_provider_with_the_config_and_a_preset_without(
    gateway: GatewayProcess,
) -> None:
    batch = json.dumps({"events": [batchly_event(), batchly_event("charge.voided")]}).encode()
    result = cli(
        "normalize", "batchly", "--compact", "--config", str(gateway.config_path), stdin=batch
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [event["type"] for event in events] == ["payment.succeeded", "batchly.charge.voided"]
    assert all(event["verification"] == "none" for event in events)
    # Without --config: no config is read, so the file's providers are unknown...
    unknown = cli("normalize", "batchly", stdin=batch)
    assert unknown.returncode == 2
    assert json.loads(unknown.stderr)["error"] == "unknown_adapter"
    # ...but the presets are known.
    preset = cli("normalize", "stripe", "--compact", stdin=stripe_body("charge.refunded"))
    assert preset.returncode == 0, preset.stderr
    assert json.loads(preset.stdout)["type"] == "payment.refunded"


def cli(*args: str, stdin: str | bytes = b"") -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` from the repository, no config read unless ARGS name one."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        input=stdin.decode() if isinstance(stdin, bytes) else stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

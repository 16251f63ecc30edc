"""The shipped presets: every one loads, names its source, maps only into the taxonomy, and
reads its provider's documented examples into the canonical events written here by hand.

The fixtures under tests/fixtures/presets/<preset>/ are examples shaped as the providers'
documentation shows them; each `<example>.case.json` says what the canonical event must be
(partially: each key given must match), written from the reference (docs/), not by running the code.
The signature schemes are checked against the providers' own libraries in
test_presets_reference.py; the providers without such a library here (Paystack, Coinbase
Commerce, Dwolla, Wise) are checked below against their documented scheme, computed
independently.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import tomllib
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import Adapter
from adapters.errors import InvalidPayload, InvalidSignature
from adapters.presets import PRESET_SOURCES, PRESETS, PresetError, load_presets
from adapters.registry import ADAPTERS
from adapters.request import InboundRequest
from adapters.source import Secret, SourceSettings
from schemas.event import CanonicalEvent, decode_event, encode_event
from schemas.taxonomy import KINDS, is_canonical_type
from schemas.timestamps import parse_timestamp
from tests.support import FIXTURES, NOW, OTHER_SECRET, SECRET

PRESET_FIXTURES = FIXTURES / "presets"
CASES = sorted(PRESET_FIXTURES.glob("*/*.case.json"))
ABSENT = "__absent__"
SQUARE_URL = "https://hooks.example.com/webhooks/square-main"
REQUIRED = {"stripe", "gocardless", "square", "razorpay"}
# docs/reference/providers.md: four or more of these.
OPTIONAL = {
    "paystack",
    "checkout",
    "revolut",
    "airwallex",
    "wise",
    "lithic",
    "coinbase_commerce",
    "dwolla",
    "modern_treasury",
}
PROPERTY = settings(
    max_examples=100,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def preset_table(name: str) -> dict[str, Any]:
    text = files("adapters.presets").joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def preset_settings(preset: str, **overrides: Any) -> SourceSettings:
    fields: dict[str, Any] = {
        "name": f"{preset}-test",
        "adapter": preset,
        "secrets": (Secret(SECRET),),
        "public_url": SQUARE_URL,
    }
    if "secrets" in overrides:
        overrides["secrets"] = tuple(Secret(value) for value in overrides["secrets"])
    fields.update(overrides)
    return SourceSettings(**fields)


def verifies(adapter: Adapter, body: bytes, headers: dict[str, str], **settings: Any) -> bool:
    request = InboundRequest(body=body, headers={k.lower(): v for k, v in headers.items()})
    try:
        adapter.verify(request, preset_settings(adapter.name, **settings), NOW)
    except InvalidSignature:
        return False
    return True


# Loading.


def test_the_contracts_presets_are_shipped() -> None:
    assert set(PRESETS) >= REQUIRED
    assert len(set(PRESETS) & OPTIONAL) >= 4
    assert set(PRESETS) <= REQUIRED | OPTIONAL


def test_every_preset_file_is_loaded_under_its_name() -> None:
    shipped = {
        entry.name.removesuffix(".toml")
        for entry in files("adapters.presets").iterdir()
        if entry.name.endswith(".toml")
    }
    assert set(PRESETS) == shipped
    for name, adapter in PRESETS.items():
        assert adapter.name == name
        assert adapter.origin == "preset"
        assert adapter.scheme == preset_table(name)["signature"]["scheme"]


def test_no_preset_takes_a_builtin_name() -> None:
    assert not set(PRESETS) & set(ADAPTERS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_names_the_documentation_it_was_written_from(name: str) -> None:
    page = PRESET_SOURCES[name]
    assert page == preset_table(name)["preset"]["documentation"]
    assert page.startswith("https://")
    assert preset_table(name)["preset"]["notes"].strip()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_maps_only_into_known_canonical_kinds(name: str) -> None:
    types: dict[str, str] = preset_table(name).get("types", {})
    assert types, "a preset maps at least one provider type"
    for provider_type, canonical in types.items():
        if canonical.endswith("*"):
            assert canonical.partition(".")[0] in KINDS, provider_type
        else:
            assert is_canonical_type(canonical), f"{provider_type} -> {canonical}"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_signed_preset_reads_its_signature_header(name: str) -> None:
    adapter = PRESETS[name]
    assert adapter.signed
    header = preset_table(name)["signature"].get("header", "webhook-signature")
    assert header.lower() in adapter.signature_headers


def test_the_loader_names_every_problem_of_a_broken_preset(tmp_path: Path) -> None:
    shipped = files("adapters.presets") / "razorpay.toml"
    (tmp_path / "fine.toml").write_text(shipped.read_text(encoding="utf-8"))
    (tmp_path / "broken.toml").write_text(
        "[preset]\n"
        'documentation = "http://example.com/not-https"\n'
        'author = "nobody"\n'
        "[signature]\n"
        'scheme = "hmac"\n'
        'algorithm = "sha384"\n'
        'header = "X-Broken-Signature"\n'
        "[event]\n"
        'type = "type"\n'
        "[types]\n"
        '"thing.done" = "payment.teleported"\n'
    )
    with pytest.raises(PresetError) as raised:
        load_presets(tmp_path)
    message = str(raised.value)
    assert "presets.broken.preset.documentation" in message
    assert "presets.broken.preset.author" in message
    assert "presets.broken.signature.algorithm" in message
    assert "presets.broken.types" in message
    assert "presets.fine" not in message


def test_the_loader_needs_a_documentation_page(tmp_path: Path) -> None:
    (tmp_path / "nameless.toml").write_text(
        '[signature]\nscheme = "hmac"\nalgorithm = "sha256"\nheader = "X-Sig"\n'
        '[event]\ntype = "type"\n'
    )
    with pytest.raises(PresetError, match=r"presets\.nameless\.preset"):
        load_presets(tmp_path)


def test_loading_twice_gives_the_same_presets() -> None:
    adapters, sources = load_presets()
    assert set(adapters) == set(PRESETS)
    assert sources == PRESET_SOURCES


# Stripe: what docs/reference/providers.md requires of its preset.

STRIPE_REQUIRED = {
    "payment_intent.succeeded": "payment.succeeded",
    "payment_intent.payment_failed": "payment.failed",
    "charge.refunded": "payment.refunded",
    "charge.dispute.created": "payment.disputed",
    "payout.paid": "transfer.succeeded",
    "payout.failed": "transfer.failed",
}


@pytest.mark.parametrize(("provider_type", "canonical"), sorted(STRIPE_REQUIRED.items()))
def test_stripe_maps_the_types_the_contract_names(provider_type: str, canonical: str) -> None:
    body = msgspec.json.encode(
        {
            "id": "evt_1",
            "object": "event",
            "type": provider_type,
            "created": 1680064028,
            "data": {"object": {"id": "obj_1", "amount": 1234, "currency": "eur"}},
        }
    )
    event = PRESETS["stripe"].normalize(body, {}, preset_settings("stripe"), NOW)
    assert event.type == canonical
    assert event.subject == "obj_1"
    assert event.providerid == "evt_1"
    assert event.data.amount is not None
    assert (event.data.amount.value, event.data.amount.currency) == ("12.34", "EUR")


# The documented examples.


def _case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name.removesuffix('.case.json')}"


def _assert_partial(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for key, want in expected.items():
        if want == ABSENT:
            assert key not in actual, f"{where}.{key} should be absent"
        elif key == "data":
            _assert_partial(actual["data"], want, f"{where}.data")
        elif key in {"time", "occurred_at"} and want is not None:
            assert parse_timestamp(actual[key]) == parse_timestamp(want), f"{where}.{key}"
        else:
            assert key in actual, f"{where}.{key} is missing"
            assert actual[key] == want, f"{where}.{key}: {actual[key]!r} != {want!r}"


def _normalize_case(
    case_path: Path, received_at: datetime = NOW, **overrides: Any
) -> tuple[list[CanonicalEvent], dict[str, Any], bytes]:
    adapter = PRESETS[case_path.parent.name]
    case = msgspec.json.decode(case_path.read_bytes())
    body = case_path.with_name(case_path.name.removesuffix(".case.json") + ".json").read_bytes()
    settings = preset_settings(adapter.name, **{**case.get("settings", {}), **overrides})
    headers = case.get("headers", {})
    if "expect_all" in case:
        assert adapter.batch
        events = adapter.normalize_all(body, headers, settings, received_at, "signature")
    else:
        events = [adapter.normalize(body, headers, settings, received_at, "signature")]
    return events, case, body


def test_every_preset_has_documented_examples() -> None:
    assert {path.parent.name for path in CASES} == set(PRESETS)


@pytest.mark.parametrize("case_path", CASES, ids=_case_id)
def test_documented_example_normalizes_as_expected(case_path: Path) -> None:
    events, case, body = _normalize_case(case_path)
    expected = case.get("expect_all", [case.get("expect")])
    assert len(events) == len(expected)
    for index, (event, want) in enumerate(zip(events, expected, strict=True)):
        encoded = encode_event(event)
        produced = msgspec.json.decode(encoded)
        _assert_partial(produced, want, f"$[{index}]")
        assert produced["provider"] == case_path.parent.name
        assert produced["source"] == f"/sources/{case_path.parent.name}-test"
        assert produced["verification"] == "signature"
        assert decode_event(encoded) == event
    if "expect_all" not in case:
        # The provider's body travels verbatim.
        assert bytes(events[0].data.provider_payload) == body.strip()


@pytest.mark.parametrize("case_path", CASES, ids=_case_id)
def test_documented_example_keeps_its_id_across_retries(case_path: Path) -> None:
    first, _, _ = _normalize_case(case_path)
    retry, _, _ = _normalize_case(case_path, received_at=NOW + timedelta(hours=1))
    other_source, _, _ = _normalize_case(case_path, name="another-source")
    assert [event.id for event in first] == [event.id for event in retry]
    assert not {event.id for event in first} & {event.id for event in other_source}
    assert len({event.id for event in first}) == len(first)


def test_wise_recognises_a_retry_whose_delivery_id_and_sent_at_changed() -> None:
    # Wise gives every delivery attempt a new X-Delivery-Id, and `sent_at` is the attempt's.
    wise = PRESETS["wise"]
    path = PRESET_FIXTURES / "wise" / "transfer_outgoing_payment_sent.json"
    body = path.read_bytes()
    retried = body.replace(b"2020-01-01T12:34:57.123Z", b"2020-01-01T13:04:57.001Z")
    assert retried != body
    settings = preset_settings("wise")
    first = wise.normalize(body, {"x-delivery-id": "a1"}, settings, NOW)
    again = wise.normalize(retried, {"x-delivery-id": "b2"}, settings, NOW)
    assert first.id == again.id
    next_state = body.replace(b'"outgoing_payment_sent"', b'"funds_refunded"')
    assert wise.normalize(next_state, {}, settings, NOW).id != first.id


def test_a_gocardless_batch_dedupes_each_event_on_its_own_id() -> None:
    gocardless = PRESETS["gocardless"]
    settings = preset_settings("gocardless")
    batch = (PRESET_FIXTURES / "gocardless" / "batch.json").read_bytes()
    events = gocardless.normalize_all(batch, {}, settings, NOW, "signature")
    single = msgspec.json.encode({"events": [msgspec.json.decode(batch)["events"][1]]})
    (alone,) = gocardless.normalize_all(single, {}, settings, NOW, "signature")
    assert alone.id == events[1].id


def test_an_event_without_a_type_is_an_invalid_payload() -> None:
    with pytest.raises(InvalidPayload):
        PRESETS["stripe"].normalize(
            b'{"id": "evt_1", "data": {}}', {}, preset_settings("stripe"), NOW
        )
    with pytest.raises(InvalidPayload):
        PRESETS["razorpay"].normalize(b"not json", {}, preset_settings("razorpay"), NOW)


# The schemes without a Python library from their provider, checked against their docs.


def paystack_signature(body: bytes, secret: str) -> str:
    # paystack.com/docs/payments/webhooks: HMAC SHA512 of the payload, with the secret key.
    return hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()


def coinbase_signature(body: bytes, secret: str) -> str:
    # docs.cdp.coinbase.com/commerce: SHA256 HMAC of the raw payload, with the shared secret.
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def dwolla_signature(body: bytes, secret: str) -> str:
    # developers.dwolla.com: SHA256 HMAC of the request body, keyed with the webhook secret.
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


HMAC_SCHEMES = {
    "paystack": ("x-paystack-signature", paystack_signature),
    "coinbase_commerce": ("X-CC-Webhook-Signature", coinbase_signature),
    "dwolla": ("X-Request-Signature-SHA-256", dwolla_signature),
}
SECRETS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=40)


@pytest.mark.parametrize("name", sorted(HMAC_SCHEMES))
@PROPERTY
@given(body=st.binary(min_size=1, max_size=300), secret=SECRETS, other=SECRETS, data=st.data())
def test_hmac_preset_accepts_exactly_the_documented_signature(
    name: str, body: bytes, secret: str, other: str, data: st.DataObject
) -> None:
    header, sign = HMAC_SCHEMES[name]
    adapter = PRESETS[name]
    signature = sign(body, secret)
    assert verifies(adapter, body, {header: signature}, secrets=[secret])
    assert verifies(adapter, body, {header: signature}, secrets=[other, secret])
    if other != secret:
        assert not verifies(adapter, body, {header: sign(body, other)}, secrets=[secret])
    tampered = body + data.draw(st.binary(min_size=1, max_size=4), label="appended")
    assert not verifies(adapter, tampered, {header: signature}, secrets=[secret])
    assert not verifies(adapter, body, {}, secrets=[secret])


def _pem(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def wise_key() -> rsa.RSAPrivateKey:
    # Wise signs with a 2048-bit RSA key; a key made here stands in for theirs.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def wise_signature(body: bytes, key: rsa.RSAPrivateKey) -> str:
    # docs.wise.com event handling: SHA256withRSA over the body, base64 in X-Signature-SHA256.
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


@PROPERTY
@given(body=st.binary(min_size=1, max_size=300), data=st.data())
def test_wise_accepts_exactly_a_signature_by_its_public_key(
    wise_key: rsa.RSAPrivateKey, body: bytes, data: st.DataObject
) -> None:
    wise = PRESETS["wise"]
    public_key = _pem(wise_key.public_key())
    signature = wise_signature(body, wise_key)
    header = "X-Signature-SHA256"
    assert verifies(wise, body, {header: signature}, secrets=[], public_key=public_key)
    tampered = body + data.draw(st.binary(min_size=1, max_size=4), label="appended")
    assert not verifies(wise, tampered, {header: signature}, secrets=[], public_key=public_key)
    raw = bytearray(base64.b64decode(signature))
    raw[data.draw(st.integers(0, len(raw) - 1), label="byte")] ^= 1
    flipped = base64.b64encode(bytes(raw)).decode()
    assert not verifies(wise, body, {header: flipped}, secrets=[], public_key=public_key)
    assert not verifies(wise, body, {}, secrets=[], public_key=public_key)


def test_wise_rejects_a_signature_by_another_key(wise_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = (PRESET_FIXTURES / "wise" / "balance_credit.json").read_bytes()
    headers = {"X-Signature-SHA256": wise_signature(body, other)}
    public_key = _pem(wise_key.public_key())
    assert not verifies(PRESETS["wise"], body, headers, secrets=[], public_key=public_key)
    assert verifies(PRESETS["wise"], body, headers, secrets=[], public_key=_pem(other.public_key()))


def test_square_signs_the_notification_url() -> None:
    square = PRESETS["square"]
    body = (PRESET_FIXTURES / "square" / "dispute_created.json").read_bytes()
    digest = hmac.new(SECRET.encode(), SQUARE_URL.encode() + body, hashlib.sha256).digest()
    headers = {"x-square-hmacsha256-signature": base64.b64encode(digest).decode()}
    assert verifies(square, body, headers)
    assert not verifies(square, body, headers, public_url=SQUARE_URL + "/")
    assert not verifies(square, body, headers, secrets=[OTHER_SECRET])


def test_stripe_rejects_a_timestamp_from_the_future() -> None:
    body = (PRESET_FIXTURES / "stripe" / "payout_paid.json").read_bytes()
    ahead = int((NOW + timedelta(seconds=301)).timestamp())
    digest = hmac.new(SECRET.encode(), f"{ahead}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Stripe-Signature": f"t={ahead},v1={digest}"}
    assert not verifies(PRESETS["stripe"], body, headers)
    assert verifies(PRESETS["stripe"], body, headers, tolerance_seconds=400)


def test_every_preset_signs_requests_it_accepts(wise_key: rsa.RSAPrivateKey) -> None:
    # Signing serves tests, samples and benchmarks (the gateway's `sample` command). Square's
    # signature covers the source's public_url, so it signs for a source.
    private_pem = wise_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    keys = {
        "lithic": "whsec_" + base64.b64encode(b"k" * 24).decode(),
        "wise": private_pem,
    }
    body = b'{"id":"evt_1","type":"x","event":"x","event_type":"x","events":[]}'
    for name, adapter in sorted(PRESETS.items()):
        assert adapter.source_signer is not None, name
        secret = keys.get(name, SECRET)
        settings = preset_settings(name, public_key=_pem(wise_key.public_key()))
        headers = adapter.source_signer(body, secret, NOW, settings)
        assert verifies(
            adapter, body, headers, secrets=[secret], public_key=_pem(wise_key.public_key())
        ), name


# Every preset makes samples (`gateway sample`): those whose provider type is a field of the
# body from their expressions; those that compute it (GoCardless joins `resource_type` and
# `action`; Square and Wise add the new status to `*.updated` types) from `[preset.samples]`.
COMPUTED_TYPES = sorted(
    name
    for name in PRESETS
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", preset_table(name)["event"]["type"])
)


def test_the_presets_that_compute_their_type_say_how_to_sample_it() -> None:
    assert COMPUTED_TYPES == ["gocardless", "square", "wise"]
    for name in COMPUTED_TYPES:
        assert preset_table(name)["preset"]["samples"], name


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_gives_samples_it_can_normalize(name: str) -> None:
    adapter = PRESETS[name]
    assert adapter.sample is not None
    now = datetime(2026, 1, 2, tzinfo=UTC)
    (typical,) = adapter.normalize_all(adapter.sample(None, now), {}, preset_settings(name), NOW)
    assert typical.data.kind != "unmapped"
    if "payment.succeeded" in preset_table(name)["types"].values():
        succeeded = adapter.sample("payment.succeeded", now)
        (event,) = adapter.normalize_all(succeeded, {}, preset_settings(name), NOW)
        assert event.type == "payment.succeeded"

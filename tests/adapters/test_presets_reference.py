"""The presets against the providers' own verifiers: what the library accepts, the preset
accepts, and nothing else.

Each provider here publishes a Python library that checks its webhooks: `stripe`
(`WebhookSignature.verify_header`, `Webhook.construct_event`), `gocardless_pro`
(`webhooks.parse`), `squareup` (`square.utils.webhooks_helper.verify_signature`), `razorpay`
(`Utility.verify_webhook_signature`), and `standardwebhooks` for Lithic, a Standard Webhooks
sender. Hypothesis draws requests (bodies, secrets, timestamps) and what happens to them on
the way: delivered as signed, body tampered, signature tampered (one character, or its
case), signed with another secret, timestamp too old or too far ahead, no signature, and
rotations (the source holding two secrets, or the provider sending two signatures). Each
request is signed the way the provider's documentation says, by code written here, never
by the gateway's own signer. The property: the preset accepts a request with its source's
secrets exactly when the library accepts it with one of those secrets.

Two differences are on purpose, and each has its own test below: Stripe's verifier accepts any
timestamp from the future, the gateway rejects one beyond the tolerance
(docs/reference/providers.md: "either way"); and the libraries that compare the signature's text
reject the same digest spelled otherwise (hex in upper case; base64 with other spare bits), which
the gateway reads as the digest it is, as the built-in adapters do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import gocardless_pro.webhooks  # type: ignore[import-untyped]
import pytest
import razorpay  # type: ignore[import-untyped]
import standardwebhooks
import stripe
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st
from square.utils.webhooks_helper import verify_signature as square_verify_signature

from adapters.base import Adapter
from adapters.described import described_adapter, parse_description
from adapters.errors import InvalidSignature
from adapters.presets import PRESETS
from adapters.request import InboundRequest
from adapters.source import Secret, SourceSettings
from tests.strategies import stripe_shaped_bodies

PROPERTY = settings(
    max_examples=250,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TOLERANCE = 300
# Far enough from the tolerance's edge that the seconds between signing and checking
# (the libraries read the wall clock themselves) never decide a case.
MARGIN = 30
HEX = "0123456789abcdef"
BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
SQUARE_URLS = (
    "https://hooks.example.com/webhooks/square-main",
    "https://example.org/square?source=main",
)

Headers = dict[str, str]

EVENT_BODIES = stripe_shaped_bodies(
    ["payment_intent.succeeded", "charge.refunded", "something.new"], size=3, leaves=10
)
# Any UTF-8 text: every library here reads the body as text.
TEXT_BODIES = st.text(min_size=1, max_size=300).map(str.encode)
GOCARDLESS_BODIES = st.builds(
    lambda events, ensure_ascii: json.dumps(
        {"events": events, "meta": {"webhook_id": "WB00001"}}, ensure_ascii=ensure_ascii
    ).encode(),
    st.lists(
        st.fixed_dictionaries(
            {
                "id": st.text(min_size=1, max_size=12),
                "resource_type": st.sampled_from(["payments", "mandates", "payouts"]),
                "action": st.sampled_from(["confirmed", "failed", "cancelled"]),
                "links": st.dictionaries(st.sampled_from(["payment", "mandate"]), st.text()),
            }
        ),
        max_size=3,
    ),
    st.booleans(),
)
PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
PLAIN_SECRETS = st.text(alphabet=PRINTABLE, min_size=8, max_size=40)
STRIPE_SECRETS = PLAIN_SECRETS.map(lambda tail: "whsec_" + tail)
# Square's signature keys are URL-safe base64 text, used as they are (their UTF-8 bytes).
SQUARE_SECRETS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    min_size=8,
    max_size=40,
)
# Standard Webhooks secrets: `whsec_` and the base64 of the key bytes.
WHSEC_SECRETS = st.binary(min_size=24, max_size=64).map(
    lambda key: "whsec_" + base64.b64encode(key).decode()
)


def wall_clock() -> int:
    """The libraries check timestamps against the real clock, so the tests sign with it."""
    return int(time.time())


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


# Each provider's signing, written from its documentation.


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    # docs.stripe.com/webhooks: HMAC-SHA256 keyed with the endpoint secret over "<t>.<body>".
    return hmac_sha256(secret.encode(), f"{timestamp}.".encode() + body).hex()


def stripe_sign(body: bytes, secret: str, timestamp: int, url: str) -> Headers:
    return {"Stripe-Signature": f"t={timestamp},v1={stripe_signature(body, secret, timestamp)}"}


def gocardless_sign(body: bytes, secret: str, timestamp: int, url: str) -> Headers:
    # developer.gocardless.com: hex HMAC-SHA256 of the body with the endpoint's secret.
    return {"Webhook-Signature": hmac_sha256(secret.encode(), body).hex()}


def square_sign(body: bytes, secret: str, timestamp: int, url: str) -> Headers:
    # developer.squareup.com/docs/webhooks/step3validate: base64 HMAC-SHA256 of URL + body.
    digest = hmac_sha256(secret.encode(), url.encode() + body)
    return {"x-square-hmacsha256-signature": base64.b64encode(digest).decode()}


def razorpay_sign(body: bytes, secret: str, timestamp: int, url: str) -> Headers:
    # razorpay.com/docs/webhooks/validate-test: hex HMAC-SHA256 of the body, webhook secret.
    return {"X-Razorpay-Signature": hmac_sha256(secret.encode(), body).hex()}


def standard_webhooks_sign(
    body: bytes, secret: str, timestamp: int, url: str, message_id: str = "msg_2b7Xq"
) -> Headers:
    # standardwebhooks.com: base64 HMAC-SHA256 over "<id>.<timestamp>.<body>", keyed with the
    # base64-decoded part of the secret after `whsec_`.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac_sha256(key, f"{message_id}.{timestamp}.".encode() + body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


# Each provider's library, as a yes or no. Anything it raises is a no.


def _accepts(check: Callable[[], object]) -> bool:
    try:
        return check() is not False
    except Exception:  # every library signals a rejection its own way
        return False


def stripe_accepts(body: bytes, headers: Headers, secret: str, url: str) -> bool:
    header = headers.get("Stripe-Signature")
    return _accepts(
        lambda: stripe.WebhookSignature.verify_header(body, header, secret, tolerance=TOLERANCE)
    )


def gocardless_accepts(body: bytes, headers: Headers, secret: str, url: str) -> bool:
    header = headers.get("Webhook-Signature")
    return _accepts(lambda: gocardless_pro.webhooks.parse(body, secret, header))


def square_accepts(body: bytes, headers: Headers, secret: str, url: str) -> bool:
    header = headers.get("x-square-hmacsha256-signature")
    return _accepts(
        lambda: square_verify_signature(
            request_body=body.decode(),
            signature_header=header or "",
            signature_key=secret,
            notification_url=url,
        )
    )


def razorpay_accepts(body: bytes, headers: Headers, secret: str, url: str) -> bool:
    header = headers.get("X-Razorpay-Signature")
    utility = razorpay.Utility()
    return _accepts(lambda: utility.verify_webhook_signature(body.decode(), header, secret))


def standard_webhooks_accepts(body: bytes, headers: Headers, secret: str, url: str) -> bool:
    webhook = standardwebhooks.Webhook(secret)
    return _accepts(lambda: webhook.verify(body, headers, json_parse=False))


# How a provider's signature header can be tampered with, and how it carries two signatures.


def _replace_one(value: str, start: int, alphabet: str, data: st.DataObject) -> str:
    index = data.draw(st.integers(start, len(value) - 1), label="tampered position")
    replacement = data.draw(
        st.sampled_from([c for c in alphabet if c != value[index]]), label="replacement"
    )
    return value[:index] + replacement + value[index + 1 :]


def _digest(text: str, alphabet: str) -> bytes:
    if alphabet == HEX:
        return bytes.fromhex(text)
    return base64.b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Referee:
    """One preset, its provider's library, and how the provider signs."""

    preset: str
    header: str
    secrets: st.SearchStrategy[str]
    bodies: st.SearchStrategy[bytes]
    sign: Callable[[bytes, str, int, str], Headers]
    library_accepts: Callable[[bytes, Headers, str, str], bool]
    # The signature text inside the header: where tampering happens, and its alphabet.
    signature_start: Callable[[str], int]
    alphabet: str
    timestamped: bool = False
    # Two signatures in one header (a rotation on the provider's side), when the scheme has it.
    combine: Callable[[Headers, Headers], Headers] | None = None
    # Stripe's verifier does not reject timestamps from the future (module docstring).
    library_accepts_future: bool = False
    urls: tuple[str, ...] = field(default=("https://hooks.example.com/unused",))


def _after(marker: str) -> Callable[[str], int]:
    return lambda value: value.rindex(marker) + len(marker)


def _stripe_combine(first: Headers, second: Headers) -> Headers:
    extra = second["Stripe-Signature"].split(",", 1)[1]
    return {"Stripe-Signature": f"{first['Stripe-Signature']},{extra}"}


def _standard_webhooks_combine(first: Headers, second: Headers) -> Headers:
    both = f"{first['webhook-signature']} {second['webhook-signature']}"
    return {**first, "webhook-signature": both}


REFEREES = (
    Referee(
        preset="stripe",
        header="Stripe-Signature",
        secrets=STRIPE_SECRETS,
        bodies=EVENT_BODIES | TEXT_BODIES,
        sign=stripe_sign,
        library_accepts=stripe_accepts,
        signature_start=_after("v1="),
        alphabet=HEX,
        timestamped=True,
        combine=_stripe_combine,
        library_accepts_future=True,
    ),
    Referee(
        preset="gocardless",
        header="Webhook-Signature",
        secrets=PLAIN_SECRETS,
        bodies=GOCARDLESS_BODIES,
        sign=gocardless_sign,
        library_accepts=gocardless_accepts,
        signature_start=lambda value: 0,
        alphabet=HEX,
    ),
    Referee(
        preset="square",
        header="x-square-hmacsha256-signature",
        secrets=SQUARE_SECRETS,
        bodies=TEXT_BODIES,
        sign=square_sign,
        library_accepts=square_accepts,
        signature_start=lambda value: 0,
        alphabet=BASE64,
        urls=SQUARE_URLS,
    ),
    Referee(
        preset="razorpay",
        header="X-Razorpay-Signature",
        secrets=PLAIN_SECRETS,
        bodies=TEXT_BODIES,
        sign=razorpay_sign,
        library_accepts=razorpay_accepts,
        signature_start=lambda value: 0,
        alphabet=HEX,
    ),
    Referee(
        preset="lithic",
        header="webhook-signature",
        secrets=WHSEC_SECRETS,
        bodies=TEXT_BODIES,
        sign=standard_webhooks_sign,
        library_accepts=standard_webhooks_accepts,
        signature_start=_after("v1,"),
        alphabet=BASE64,
        timestamped=True,
        combine=_standard_webhooks_combine,
    ),
)
MUTATIONS = (
    "valid",
    "tampered_body",
    "tampered_signature",
    "wrong_secret",
    "expired",
    "future",
    "missing_signature",
    "rotated_secrets",
    "rotated_signatures",
    "wrong_url",
)


def source_settings(preset: str, secrets: list[str], url: str) -> SourceSettings:
    return SourceSettings(
        name=f"{preset}-reference",
        adapter=preset,
        secrets=tuple(Secret(secret) for secret in secrets),
        tolerance_seconds=TOLERANCE,
        public_url=url,
    )


def preset_accepts(
    adapter: Adapter, body: bytes, headers: Headers, secrets: list[str], url: str, now: int
) -> bool:
    request = InboundRequest(body=body, headers={k.lower(): v for k, v in headers.items()})
    settings = source_settings(adapter.name, secrets, url)
    try:
        verification = adapter.verify(request, settings, datetime.fromtimestamp(now, UTC))
    except InvalidSignature:
        return False
    assert verification == "signature"
    return True


@dataclass(frozen=True)
class Drawn:
    """One request as delivered, and the secrets its source holds."""

    body: bytes
    headers: Headers
    secrets: list[str]
    url: str
    timestamp: int
    mutation: str


def mutations(referee: Referee) -> list[str]:
    """What can happen to a request of this provider's scheme."""
    return [
        mutation
        for mutation in MUTATIONS
        if (mutation not in {"expired", "future"} or referee.timestamped)
        and (mutation != "rotated_signatures" or referee.combine is not None)
        and (mutation != "wrong_url" or len(referee.urls) > 1)
    ]


def draw_request(referee: Referee, data: st.DataObject, now: int) -> Drawn:
    mutation = data.draw(st.sampled_from(mutations(referee)), label="mutation")
    secret, other = data.draw(
        st.lists(referee.secrets, min_size=2, max_size=2, unique=True), label="secrets"
    )
    body = data.draw(referee.bodies, label="body")
    url = data.draw(st.sampled_from(referee.urls), label="url")
    timestamp = now + data.draw(
        st.integers(-(TOLERANCE - MARGIN), TOLERANCE - MARGIN), label="clock skew"
    )
    secrets = [secret]
    if mutation == "expired":
        timestamp = now - TOLERANCE - data.draw(st.integers(MARGIN, 10**7), label="age")
    if mutation == "future":
        timestamp = now + TOLERANCE + data.draw(st.integers(MARGIN, 10**7), label="ahead")
    if mutation == "rotated_secrets":
        secrets = data.draw(st.permutations([secret, other]), label="source secrets")
        secret = data.draw(st.sampled_from(secrets), label="signing secret")
    signing_url = url
    if mutation == "wrong_url":
        signing_url = url + data.draw(st.sampled_from(["/", "x", "?a=1"]), label="url change")
    headers = referee.sign(
        body, other if mutation == "wrong_secret" else secret, timestamp, signing_url
    )
    if mutation == "rotated_signatures":
        assert referee.combine is not None
        second = referee.sign(body, other, timestamp, signing_url)
        pair = [headers, second] if data.draw(st.booleans(), label="order") else [second, headers]
        headers = referee.combine(*pair)
        secrets = [data.draw(st.sampled_from([secret, other]), label="source secret")]
    value = headers[referee.header]
    start = referee.signature_start(value)
    if mutation == "tampered_signature":
        tampered = _replace_one(value[start:], 0, referee.alphabet, data)
        # A base64 text has spare bits in its last character: a change there may spell the
        # same bytes, which is no tampering (see the respelling test below).
        assume(_digest(tampered, referee.alphabet) != _digest(value[start:], referee.alphabet))
        headers[referee.header] = value[:start] + tampered
    if mutation == "tampered_body":
        sent = data.draw(referee.bodies, label="sent")
        # Another body, or the same with a space more: JSON still, a different message.
        body = sent if sent != body else body + b" "
    if mutation == "missing_signature":
        del headers[referee.header]
    return Drawn(body, headers, secrets, url, timestamp, mutation)


@pytest.mark.parametrize("referee", REFEREES, ids=lambda referee: referee.preset)
@PROPERTY
@given(data=st.data())
def test_preset_accepts_exactly_what_the_providers_library_accepts(
    referee: Referee, data: st.DataObject
) -> None:
    now = wall_clock()
    drawn = draw_request(referee, data, now)
    note(f"{drawn.mutation}: {drawn.headers!r}")
    library = any(
        referee.library_accepts(drawn.body, drawn.headers, secret, drawn.url)
        for secret in drawn.secrets
    )
    ours = preset_accepts(
        PRESETS[referee.preset], drawn.body, drawn.headers, drawn.secrets, drawn.url, now
    )
    event(f"{drawn.mutation}: {'accepted' if library else 'rejected'} by the library")
    if referee.library_accepts_future and drawn.timestamp > now + TOLERANCE:
        # Stripe's deliberate difference (module docstring): it accepts, the gateway does not.
        assert library
        assert not ours
        return
    assert ours == library


@pytest.mark.parametrize("referee", REFEREES, ids=lambda referee: referee.preset)
def test_preset_and_library_accept_a_request_signed_as_the_docs_say(referee: Referee) -> None:
    now = wall_clock()
    body = b'{"id":"evt_1","type":"payment_intent.succeeded","events":[],"data":{"object":{}}}'
    secret = {"stripe": "whsec_x1", "lithic": "whsec_" + base64.b64encode(b"k" * 24).decode()}.get(
        referee.preset, "s3cr3t-key"
    )
    url = referee.urls[0]
    headers = referee.sign(body, secret, now, url)
    assert referee.library_accepts(body, headers, secret, url)
    assert preset_accepts(PRESETS[referee.preset], body, headers, [secret], url, now)


def test_stripe_construct_event_agrees_on_a_whole_event() -> None:
    now = wall_clock()
    body = (
        b'{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"payout.paid",'
        b'"created":1686089970,"data":{"object":{"id":"po_1","object":"payout","amount":1100}}}'
    )
    headers = stripe_sign(body, "whsec_test_secret", now, "")
    event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_test_secret")
    assert event.id == "evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert preset_accepts(PRESETS["stripe"], body, headers, ["whsec_test_secret"], "", now)


HEX_REFEREES = tuple(referee for referee in REFEREES if referee.alphabet == HEX)


@pytest.mark.parametrize("referee", HEX_REFEREES, ids=lambda referee: referee.preset)
@settings(max_examples=50, database=None, derandomize=True, deadline=None)
@given(data=st.data())
def test_an_upper_case_hex_digest_is_the_same_digest(referee: Referee, data: st.DataObject) -> None:
    # The second deliberate difference (module docstring): stripe, gocardless_pro and razorpay
    # compare the hex text, so they reject `ABC...` for `abc...`; the gateway compares the
    # digest's bytes, so the spelling does not matter and nothing can be forged by it.
    now = wall_clock()
    secret = data.draw(referee.secrets, label="secret")
    body = data.draw(referee.bodies, label="body")
    headers = referee.sign(body, secret, now, referee.urls[0])
    value = headers[referee.header]
    start = referee.signature_start(value)
    assume(value[start:].upper() != value[start:])
    headers[referee.header] = value[:start] + value[start:].upper()
    assert not referee.library_accepts(body, headers, secret, referee.urls[0])
    assert preset_accepts(PRESETS[referee.preset], body, headers, [secret], referee.urls[0], now)


def test_a_base64_digest_respelled_in_its_spare_bits_is_the_same_digest() -> None:
    # 32 bytes take 43 base64 characters and a `=`; the 43rd carries 2 bits that decode to
    # nothing. Square's helper compares the text, the gateway the bytes: same digest either way.
    now = wall_clock()
    body = b'{"type":"payment.updated"}'
    headers = square_sign(body, "sq-key", now, SQUARE_URLS[0])
    value = headers["x-square-hmacsha256-signature"]
    respelled = value[:42] + BASE64[BASE64.index(value[42]) ^ 1] + value[43:]
    assert base64.b64decode(respelled) == base64.b64decode(value)
    headers["x-square-hmacsha256-signature"] = respelled
    assert not square_accepts(body, headers, "sq-key", SQUARE_URLS[0])
    assert preset_accepts(PRESETS["square"], body, headers, ["sq-key"], SQUARE_URLS[0], now)


# A preset written wrong must fail its referee: the check above has teeth.

WRONG_PRESETS: Mapping[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "stripe": ("hex read as base64", lambda table: table["signature"].update(encoding="base64")),
    "gocardless": (
        "sha512 for sha256",
        lambda table: table["signature"].update(algorithm="sha512"),
    ),
    "square": ("base64 read as hex", lambda table: table["signature"].update(encoding="hex")),
    "razorpay": ("sha1 for sha256", lambda table: table["signature"].update(algorithm="sha1")),
    "lithic": (
        "the whole whsec_ string as the key",
        lambda table: table.update(
            signature={
                "scheme": "hmac",
                "algorithm": "sha256",
                "header": "webhook-signature",
                "format": "v1,{signature}",
                "encoding": "base64",
                "signed": "{header:webhook-id}.{header:webhook-timestamp}.{body}",
                "key": "utf8",
            }
        ),
    ),
}


def wrong_preset(name: str) -> Adapter:
    """The shipped preset with one mistake made on purpose."""
    table = tomllib.loads(files("adapters.presets").joinpath(f"{name}.toml").read_text("utf-8"))
    del table["preset"]
    WRONG_PRESETS[name][1](table)
    description, problems = parse_description(table, f"wrong.{name}")
    assert description is not None, problems
    return described_adapter(name, description, origin="preset")


@pytest.mark.parametrize("referee", REFEREES, ids=lambda referee: referee.preset)
@settings(max_examples=25, database=None, derandomize=True, deadline=None)
@given(data=st.data())
def test_a_wrong_preset_disagrees_with_the_library(referee: Referee, data: st.DataObject) -> None:
    adapter = wrong_preset(referee.preset)
    now = wall_clock()
    secret = data.draw(referee.secrets, label="secret")
    body = data.draw(referee.bodies, label="body")
    url = referee.urls[0]
    headers = referee.sign(body, secret, now, url)
    assert referee.library_accepts(body, headers, secret, url)
    assert not preset_accepts(adapter, body, headers, [secret], url, now)

"""FinFusion's scheme is Stripe's (PROVIDERS.md): the real `stripe` package is the reference.

Both directions: what we sign, `stripe.Webhook.construct_event` accepts; what stripe's own
signer (`WebhookSignature.generate_signature_header` / `_compute_signature` in
stripe/_webhook.py) produces, our finfusion verifier accepts. Only the header's name differs
(`Stripe-Signature` there, `x-finfusion-signature` here); its value is passed across unchanged.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.errors import InvalidSignature
from adapters.finfusion import SIGNATURE_HEADER, sign_finfusion
from adapters.registry import ADAPTERS
from adapters.request import InboundRequest
from tests.strategies import stripe_shaped_bodies
from tests.support import OTHER_SECRET, SECRET, settings_for

PROPERTY = settings(
    max_examples=100,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FINFUSION = ADAPTERS["finfusion"]
WebhookSignature = stripe.WebhookSignature
STRIPE_SECRETS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=40
).map(lambda tail: "whsec_" + tail)

EVENT_BODIES = stripe_shaped_bodies(
    ["payment.succeeded", "card.created", "something.new"], size=4, leaves=12
)


def wall_clock() -> datetime:
    """Stripe checks against the real clock, so these tests sign with it."""
    return datetime.fromtimestamp(int(time.time()), UTC)


def our_verify(body: bytes, header: str, now: datetime, secrets: list[str] | None = None) -> str:
    settings = settings_for("finfusion", secrets=secrets or [SECRET])
    request = InboundRequest(body=body, headers={SIGNATURE_HEADER: header})
    return FINFUSION.verify(request, settings, now)


def stripe_construct(body: bytes, header: str, secret: str = SECRET) -> Any:
    return stripe.Webhook.construct_event(body, header, secret)


# Our signatures, stripe's verifier.


def test_stripe_accepts_our_finfusion_signature() -> None:
    body = b'{"id":"evt_1","object":"event","type":"payment.succeeded","data":{"object":{}}}'
    header = sign_finfusion(body, SECRET, wall_clock())[SIGNATURE_HEADER]
    event = stripe_construct(body, header)
    assert event.id == "evt_1"
    assert event.type == "payment.succeeded"


@PROPERTY
@given(body=EVENT_BODIES, secret=STRIPE_SECRETS)
def test_stripe_construct_event_accepts_every_event_we_sign(body: bytes, secret: str) -> None:
    header = sign_finfusion(body, secret, wall_clock())[SIGNATURE_HEADER]
    event = stripe_construct(body, header, secret)
    assert event.id == json.loads(body)["id"]


@PROPERTY
@given(text=st.text(max_size=300), secret=STRIPE_SECRETS)
def test_stripe_verify_header_accepts_our_signature_over_any_utf8_body(
    text: str, secret: str
) -> None:
    body = text.encode()
    header = sign_finfusion(body, secret, wall_clock())[SIGNATURE_HEADER]
    assert WebhookSignature.verify_header(body, header, secret, tolerance=300) is True


def test_stripe_rejects_our_signature_made_with_another_secret() -> None:
    body = b'{"id":"evt_1","object":"event","type":"x","data":{"object":{}}}'
    header = sign_finfusion(body, OTHER_SECRET, wall_clock())[SIGNATURE_HEADER]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe_construct(body, header)


# Stripe's signatures, our verifier.


def test_we_accept_the_header_stripe_generates() -> None:
    now = wall_clock()
    payload = '{"id":"evt_1","type":"payment.succeeded","data":{"object":{}}}'
    header = WebhookSignature.generate_signature_header(
        payload, SECRET, timestamp=int(now.timestamp())
    )
    assert header.startswith("t=")
    assert ",v1=" in header
    assert our_verify(payload.encode(), header, now) == "signature"


@PROPERTY
@given(
    text=st.text(max_size=300),
    secret=STRIPE_SECRETS,
    timestamp=st.integers(min_value=0, max_value=253402300799),
)
def test_we_accept_stripes_header_for_any_body_secret_and_time(
    text: str, secret: str, timestamp: int
) -> None:
    header = WebhookSignature.generate_signature_header(text, secret, timestamp=timestamp)
    now = datetime.fromtimestamp(timestamp, UTC)
    assert our_verify(text.encode(), header, now, [secret]) == "signature"


@PROPERTY
@given(
    text=st.text(max_size=200),
    secrets=st.lists(STRIPE_SECRETS, min_size=2, max_size=4, unique=True),
    data=st.data(),
)
def test_we_accept_several_v1_values_when_any_one_matches(
    text: str, secrets: list[str], data: st.DataObject
) -> None:
    # A rotation on the provider's side: one v1 per secret, in any order.
    now = wall_clock()
    timestamp = int(now.timestamp())
    signed = f"{timestamp}.{text}"
    values = [WebhookSignature._compute_signature(signed, secret) for secret in secrets]
    order = data.draw(st.permutations(values), label="order")
    header = f"t={timestamp}," + ",".join(f"v1={value}" for value in order)
    for secret in secrets:
        assert our_verify(text.encode(), header, now, [secret]) == "signature"
    # Stripe agrees for each secret.
    for secret in secrets:
        assert WebhookSignature.verify_header(text, header, secret, tolerance=300) is True


def test_we_accept_stripes_header_with_an_unknown_scheme_alongside() -> None:
    # Stripe's test mode adds `v0=` signatures; the verifier must ignore schemes it does not know.
    now = wall_clock()
    payload = '{"id":"evt_1"}'
    header = WebhookSignature.generate_signature_header(
        payload, SECRET, timestamp=int(now.timestamp())
    )
    header += ",v0=" + "0" * 64
    assert our_verify(payload.encode(), header, now) == "signature"
    assert WebhookSignature.verify_header(payload, header, SECRET, tolerance=300) is True


def test_we_and_stripe_both_reject_a_header_with_only_wrong_v1_values() -> None:
    now = wall_clock()
    timestamp = int(now.timestamp())
    payload = '{"id":"evt_1"}'
    wrong = WebhookSignature._compute_signature(f"{timestamp}.{payload}", OTHER_SECRET)
    header = f"t={timestamp},v1={wrong},v1={'0' * 64}"
    with pytest.raises(InvalidSignature):
        our_verify(payload.encode(), header, now)
    with pytest.raises(stripe.SignatureVerificationError):
        WebhookSignature.verify_header(payload, header, SECRET, tolerance=300)


def test_we_and_stripe_both_reject_a_stale_header() -> None:
    now = wall_clock()
    payload = '{"id":"evt_1"}'
    header = WebhookSignature.generate_signature_header(
        payload, SECRET, timestamp=int(now.timestamp()) - 301
    )
    with pytest.raises(InvalidSignature):
        our_verify(payload.encode(), header, now)
    with pytest.raises(stripe.SignatureVerificationError):
        WebhookSignature.verify_header(payload, header, SECRET, tolerance=300)


def test_the_whole_whsec_string_is_the_key() -> None:
    # Unlike Standard Webhooks, Stripe does not base64-decode the part after `whsec_`.
    now = wall_clock()
    payload = '{"id":"evt_1"}'
    header = WebhookSignature.generate_signature_header(
        payload, SECRET.removeprefix("whsec_"), timestamp=int(now.timestamp())
    )
    with pytest.raises(InvalidSignature):
        our_verify(payload.encode(), header, now)

"""The delivery policy's pure parts: retry timing (tenacity) and signing (the circuit breaker's
are tests/delivery/test_circuit.py)."""

from __future__ import annotations

import base64
import os
import random
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters.source import Secret
from gateway.delivery.http import parse_retry_after
from gateway.delivery.retry import MAX_RETRY_AFTER, RetryPolicy
from gateway.delivery.transport import SendResult
from gateway.signing import SigningKeys, decode_signing_secret, public_key_of

RETRY = SendResult(outcome="retry", status_code=503, error="HTTP 503")
FAILED = SendResult(outcome="failed", status_code=400, error="HTTP 400")
DELIVERED = SendResult(outcome="delivered", status_code=200)

# Retry timing.


@given(
    schedule=st.lists(st.floats(min_value=0, max_value=86400), min_size=1, max_size=10),
    seed=st.integers(),
)
def test_each_retry_waits_its_scheduled_delay_plus_at_most_ten_percent(
    schedule: list[float], seed: int
) -> None:
    policy = RetryPolicy(schedule, random.Random(seed))
    for attempts_made, scheduled in enumerate(schedule, start=1):
        delay = policy.next_delay(attempts_made, RETRY)
        assert delay is not None
        assert scheduled <= delay <= scheduled * 1.1 + 1e-9


@given(schedule=st.lists(st.floats(min_value=0, max_value=100), max_size=10))
def test_a_subscriber_gets_one_attempt_more_than_its_schedule_has_delays(
    schedule: list[float],
) -> None:
    policy = RetryPolicy(schedule)
    assert policy.next_delay(len(schedule) + 1, RETRY) is None


def test_retry_after_wins_when_longer_and_is_capped_at_a_day() -> None:
    policy = RetryPolicy([5, 300])
    longer = SendResult(outcome="retry", status_code=429, retry_after=120.0)
    shorter = SendResult(outcome="retry", status_code=429, retry_after=1.0)
    huge = SendResult(outcome="retry", status_code=503, retry_after=10 * 86400.0)
    assert policy.next_delay(1, longer) == 120.0
    assert 5 <= (policy.next_delay(1, shorter) or 0) <= 5.5
    assert policy.next_delay(1, huge) == MAX_RETRY_AFTER


def test_permanent_failures_and_successes_are_never_retried() -> None:
    policy = RetryPolicy([5, 300])
    assert policy.next_delay(1, FAILED) is None
    assert policy.next_delay(1, DELIVERED) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), ("0", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=0.0) == expected


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after("Thu, 01 Jan 1970 00:02:00 GMT", now=60.0) == 60.0


# Signing.


def whsec() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def whsk() -> str:
    return "whsk_" + base64.b64encode(os.urandom(32)).decode()


@given(text=st.text(max_size=2048))
def test_v1_signatures_verify_with_the_standardwebhooks_package(text: str) -> None:
    body = text.encode()  # bodies are JSON, so UTF-8, as the reference package assumes
    first, second = whsec(), whsec()
    timestamp = int(time.time())  # the package checks it against its own clock
    signature = SigningKeys([Secret(first), Secret(second)]).sign("evt_1", timestamp, body)
    assert signature is not None
    assert len(signature.split(" ")) == 2
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
    for secret in (first, second):  # either secret of a rotation verifies alone
        Webhook(secret).verify(body, headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec()).verify(body, headers, json_parse=False)


@given(body=st.binary(max_size=2048), timestamp=st.integers(min_value=0, max_value=2**33))
def test_v1a_signatures_verify_with_the_public_key(body: bytes, timestamp: int) -> None:
    key = whsk()
    signature = SigningKeys([Secret(key)]).sign("evt_9", timestamp, body)
    assert signature is not None
    scheme, _, encoded = signature.partition(",")
    assert scheme == "v1a"
    public = base64.b64decode(public_key_of(key).removeprefix("whpk_"))
    Ed25519PublicKey.from_public_bytes(public).verify(
        base64.b64decode(encoded), f"evt_9.{timestamp}.".encode() + body
    )


def test_mixed_secrets_give_one_signature_each_in_order() -> None:
    signature = SigningKeys([Secret(whsec()), Secret(whsk())]).sign("evt_1", 1, b"{}")
    assert signature is not None
    assert [part.split(",")[0] for part in signature.split(" ")] == ["v1", "v1a"]


def test_a_64_byte_libsodium_key_is_accepted_and_checked() -> None:
    seed = os.urandom(32)
    public = base64.b64decode(public_key_of("whsk_" + base64.b64encode(seed).decode())[5:])
    good = "whsk_" + base64.b64encode(seed + public).decode()
    bad = "whsk_" + base64.b64encode(seed + os.urandom(32)).decode()
    decode_signing_secret(good)
    with pytest.raises(ValueError, match="public half"):
        decode_signing_secret(bad)


@pytest.mark.parametrize("secret", ["nope", "whsec_***", "whsk_AAAA", "whsk_***"])
def test_malformed_secrets_are_refused_without_quoting_them(secret: str) -> None:
    with pytest.raises(ValueError, match=r"whsec_|whsk_|base64") as caught:
        decode_signing_secret(secret)
    assert secret not in str(caught.value)


def test_signing_keys_never_print_themselves() -> None:
    secret = whsec()
    keys = SigningKeys([Secret(secret)])
    assert secret[6:] not in repr(keys)

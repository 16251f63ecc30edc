"""The delivery policy's pure parts: retry timing (tenacity), the circuit breaker, signing."""

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
from gateway.delivery.circuit import (
    CLOSED,
    after_attempt,
    give_back_probe,
    may_send,
    take_probe,
)
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


# The circuit breaker.


def test_circuit_opens_after_the_threshold_and_probes_after_the_pause() -> None:
    circuit = CLOSED
    for failure in range(3):
        assert may_send(circuit, now=100.0) == "yes", failure
        circuit = after_attempt(
            circuit, RETRY, 100.0, started=100.0, failure_threshold=3, open_seconds=10
        )
    assert circuit.state == "open"
    assert may_send(circuit, now=105.0) == "no"
    assert may_send(circuit, now=110.0) == "probe"
    recovered = after_attempt(
        circuit, DELIVERED, 110.0, started=110.0, failure_threshold=3, open_seconds=10
    )
    assert recovered == CLOSED


def test_a_failed_probe_pauses_twice_as_long() -> None:
    circuit = CLOSED
    for _ in range(2):
        circuit = after_attempt(
            circuit, RETRY, 0.0, started=0.0, failure_threshold=2, open_seconds=10
        )
    assert circuit.open_until == 10.0
    circuit = after_attempt(
        circuit, RETRY, 10.0, started=10.0, failure_threshold=2, open_seconds=10
    )
    assert circuit.state == "open"
    assert circuit.open_until == 30.0


def test_a_taken_probe_keeps_the_circuit_shut_for_everyone_else_until_its_lease_ends() -> None:
    circuit = CLOSED
    for _ in range(2):
        circuit = after_attempt(
            circuit, RETRY, 0.0, started=0.0, failure_threshold=2, open_seconds=10
        )
    assert take_probe(circuit, 9.0, hold_seconds=35) is None  # still paused: no probe yet
    taken = take_probe(circuit, 10.0, hold_seconds=35)
    assert taken is not None
    # Another process reading the stored state finds nothing to send, not a second probe.
    assert may_send(taken, 10.0) == may_send(taken, 44.0) == "no"
    assert take_probe(taken, 20.0, hold_seconds=35) is None
    # Its holder died without an answer: the next probe is due when the reservation ends.
    assert may_send(taken, 45.0) == "probe"
    # The probe's answer acts as before: its failure doubles the pause from then.
    failed = after_attempt(taken, RETRY, 12.0, started=10.0, failure_threshold=2, open_seconds=10)
    assert (failed.state, failed.open_until) == ("open", 32.0)
    assert (
        after_attempt(taken, DELIVERED, 12.0, started=10.0, failure_threshold=2, open_seconds=10)
        == CLOSED
    )
    # Taken with nothing to send: given back, due again at once.
    assert may_send(give_back_probe(taken, 11.0), 11.0) == "probe"


def test_sends_already_in_flight_when_it_opened_do_not_lengthen_the_pause() -> None:
    circuit = CLOSED
    for _ in range(2):
        circuit = after_attempt(
            circuit, RETRY, 5.0, started=4.0, failure_threshold=2, open_seconds=10
        )
    assert (circuit.state, circuit.open_until) == ("open", 15.0)
    # 60 more answers from sends that left before the circuit opened: no news.
    for _ in range(60):
        circuit = after_attempt(
            circuit, RETRY, 6.0, started=4.5, failure_threshold=2, open_seconds=10
        )
    assert (circuit.state, circuit.open_until, circuit.open_seconds) == ("open", 15.0, 10)


def test_a_success_resets_the_failure_count() -> None:
    circuit = after_attempt(CLOSED, RETRY, 0.0, started=0.0, failure_threshold=2, open_seconds=10)
    circuit = after_attempt(
        circuit, DELIVERED, 0.0, started=0.0, failure_threshold=2, open_seconds=10
    )
    circuit = after_attempt(circuit, RETRY, 0.0, started=0.0, failure_threshold=2, open_seconds=10)
    assert circuit.state == "closed"


def test_threshold_zero_never_opens() -> None:
    circuit = CLOSED
    for _ in range(100):
        circuit = after_attempt(
            circuit, RETRY, 0.0, started=0.0, failure_threshold=0, open_seconds=10
        )
    assert may_send(circuit, now=0.0) == "yes"
    assert circuit == CLOSED  # unchanged: nothing for the store to write per failure


def test_gone_disables_until_an_operator_says_otherwise() -> None:
    gone = SendResult(outcome="failed", status_code=410, error="HTTP 410")
    circuit = after_attempt(CLOSED, gone, 0.0, started=0.0, failure_threshold=20, open_seconds=10)
    assert circuit.state == "disabled"
    assert may_send(circuit, now=10**9) == "no"
    late_success = after_attempt(
        circuit, DELIVERED, 1.0, started=1.0, failure_threshold=20, open_seconds=10
    )
    assert late_success.state == "disabled"


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

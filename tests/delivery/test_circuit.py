"""The circuit breaker's state machine (gateway/delivery/circuit.py, docs/reference/delivery.md):
what counts as a failure, when it opens, which answer may re-open it, and for how long."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.circuit import (
    CLOSED,
    MAX_OPEN_SECONDS,
    CircuitState,
    after_attempt,
    decode_circuit,
    encode_circuit,
    give_back_probe,
    may_send,
    take_probe,
)
from gateway.delivery.http import RETRYABLE_STATUSES
from gateway.delivery.retry import RetryPolicy
from gateway.delivery.transport import SendResult

RETRY = SendResult(outcome="retry", status_code=503, error="HTTP 503")
TIMEOUT = SendResult(outcome="retry", error="timeout")
REJECTED = SendResult(outcome="failed", status_code=400, error="HTTP 400")
DELIVERED = SendResult(outcome="delivered", status_code=200)
GONE = SendResult(outcome="failed", status_code=410, error="HTTP 410")
MARK = "probe-1"


def opened(threshold: int = 2, at: float = 0.0, pause: float = 10) -> CircuitState:
    """A circuit just opened by `threshold` failures at `at`."""
    circuit = CLOSED
    for _ in range(threshold):
        circuit = after_attempt(circuit, RETRY, at, failure_threshold=threshold, open_seconds=pause)
    assert circuit.state == "open"
    return circuit


# What the contract says is the subscriber's verdict on one message, not on its health: every
# answer the HTTP transport fails at once (3xx and 4xx but 408, 425, 429), 410 aside.
verdicts = st.builds(
    lambda status: SendResult(outcome="failed", status_code=status, error=f"HTTP {status}"),
    st.integers(300, 499).filter(lambda status: status not in RETRYABLE_STATUSES | {410}),
)
unhealthy = st.one_of(
    st.builds(
        lambda status: SendResult(outcome="retry", status_code=status, error=f"HTTP {status}"),
        st.sampled_from(sorted(RETRYABLE_STATUSES)) | st.integers(500, 599),
    ),
    st.sampled_from([TIMEOUT, SendResult(outcome="retry", error="connection error: ConnectError")]),
)
times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
marks = st.none() | st.text(min_size=1, max_size=16)
circuits = st.builds(
    CircuitState,
    state=st.sampled_from(["closed", "open"]),
    failures=st.integers(0, 1000),
    open_until=times,
    open_seconds=st.floats(min_value=0, max_value=MAX_OPEN_SECONDS),
    probe=marks,
)


# What counts.


@given(circuit=circuits, result=verdicts, now=times, probe=marks)
def test_a_verdict_on_one_message_never_changes_the_count_nor_the_state(
    circuit: CircuitState, result: SendResult, now: float, probe: str | None
) -> None:
    after = after_attempt(circuit, result, now, probe=probe, failure_threshold=3, open_seconds=10)
    assert (after.state, after.failures) == (circuit.state, circuit.failures)
    if probe is None or probe != circuit.probe or circuit.state != "open":
        assert after == circuit


@given(results=st.lists(st.one_of(verdicts, unhealthy), max_size=60))
def test_verdicts_between_failures_neither_break_nor_lengthen_the_run(
    results: list[SendResult],
) -> None:
    threshold = 20
    circuit = CLOSED
    for result in results:
        circuit = after_attempt(circuit, result, 0.0, failure_threshold=threshold, open_seconds=10)
    failures = sum(result.outcome == "retry" for result in results)
    assert circuit.failures == min(failures, threshold)
    assert circuit.state == ("open" if failures >= threshold else "closed")


def test_a_400_between_two_503s_leaves_the_count_where_it_was() -> None:
    circuit = CLOSED
    counts = []
    for result in (RETRY, REJECTED, RETRY):
        circuit = after_attempt(circuit, result, 0.0, failure_threshold=20, open_seconds=10)
        counts.append(circuit.failures)
    assert counts == [1, 1, 2]


@given(result=st.one_of(verdicts, unhealthy, st.just(DELIVERED), st.just(GONE)))
def test_the_circuit_counts_exactly_what_the_retry_policy_retries(result: SendResult) -> None:
    """One source of truth for "retried": the retry policy's (gateway/delivery/retry.py)."""
    retried = RetryPolicy([1.0]).next_delay(1, result) is not None
    circuit = CircuitState(failures=5)
    after = after_attempt(circuit, result, 0.0, failure_threshold=1000, open_seconds=10)
    if result.status_code == 410:
        assert after.state == "disabled"
    elif result.outcome == "delivered":
        assert after == CLOSED
    else:
        assert after.failures == circuit.failures + retried


def test_circuit_opens_after_the_threshold_and_probes_after_the_pause() -> None:
    circuit = CLOSED
    for failure in range(3):
        assert may_send(circuit, now=100.0) == "yes", failure
        circuit = after_attempt(circuit, RETRY, 100.0, failure_threshold=3, open_seconds=10)
    assert circuit.state == "open"
    assert may_send(circuit, now=105.0) == "no"
    assert may_send(circuit, now=110.0) == "probe"
    probing = take_probe(circuit, 110.0, hold_seconds=35, mark=MARK)
    assert probing is not None
    recovered = after_attempt(
        probing, DELIVERED, 110.5, probe=MARK, failure_threshold=3, open_seconds=10
    )
    assert recovered == CLOSED


def test_a_success_resets_the_failure_count() -> None:
    circuit = after_attempt(CLOSED, RETRY, 0.0, failure_threshold=2, open_seconds=10)
    circuit = after_attempt(circuit, DELIVERED, 0.0, failure_threshold=2, open_seconds=10)
    circuit = after_attempt(circuit, RETRY, 0.0, failure_threshold=2, open_seconds=10)
    assert circuit.state == "closed"


def test_threshold_zero_never_opens() -> None:
    circuit = CLOSED
    for _ in range(100):
        circuit = after_attempt(circuit, RETRY, 0.0, failure_threshold=0, open_seconds=10)
    assert may_send(circuit, now=0.0) == "yes"
    assert circuit == CLOSED  # unchanged: nothing for the store to write per failure


# The probe, and only the probe.


def test_a_taken_probe_keeps_the_circuit_shut_for_everyone_else_until_its_lease_ends() -> None:
    circuit = opened(at=0.0, pause=10)
    assert take_probe(circuit, 9.0, hold_seconds=35, mark=MARK) is None  # still paused
    taken = take_probe(circuit, 10.0, hold_seconds=35, mark=MARK)
    assert taken is not None
    assert taken.probe == MARK
    # Another process reading the stored state finds nothing to send, not a second probe.
    assert may_send(taken, 10.0) == may_send(taken, 44.0) == "no"
    assert take_probe(taken, 20.0, hold_seconds=35, mark="another") is None
    # Its holder died without an answer: the next probe is due when the reservation ends,
    # and it is another's: the first one's answer, should it come now, is no probe's.
    assert may_send(taken, 45.0) == "probe"
    retaken = take_probe(taken, 45.0, hold_seconds=35, mark="another")
    assert retaken is not None
    assert after_attempt(
        retaken, RETRY, 46.0, probe=MARK, failure_threshold=2, open_seconds=10
    ) == (retaken)
    # Taken with nothing to send: given back, due again at once; a stale give-back of a probe
    # already superseded changes nothing.
    assert may_send(give_back_probe(taken, 11.0, MARK), 11.0) == "probe"
    assert give_back_probe(retaken, 46.0, MARK) == retaken


def test_only_the_marked_probe_s_failure_re_opens_the_circuit() -> None:
    circuit = opened(at=0.0, pause=10)
    taken = take_probe(circuit, 10.0, hold_seconds=35, mark=MARK)
    assert taken is not None
    failed = after_attempt(taken, RETRY, 12.0, probe=MARK, failure_threshold=2, open_seconds=10)
    assert (failed.state, failed.open_until, failed.open_seconds) == ("open", 32.0, 20)
    assert failed.failures == circuit.failures + 1
    assert failed.probe is None  # the next probe is a new one, with a mark of its own


@given(result=unhealthy, now=times, probe=marks, open_until=times)
def test_a_failure_not_marked_as_the_probe_is_no_news_while_open_whatever_its_times(
    result: SendResult, now: float, probe: str | None, open_until: float
) -> None:
    """A send that left before the circuit opened, or from a process (or node) that had not
    seen it open yet: its failure neither re-opens nor lengthens the pause, whenever it comes
    and whatever that process's clock says."""
    circuit = CircuitState(
        state="open", failures=20, open_until=open_until, open_seconds=60, probe=MARK
    )
    if probe == MARK:
        probe = None
    assert (
        after_attempt(circuit, result, now, probe=probe, failure_threshold=20, open_seconds=60)
        == circuit
    )
    unprobed = msgspec.structs.replace(circuit, probe=None)
    assert (
        after_attempt(unprobed, result, now, probe=probe, failure_threshold=20, open_seconds=60)
        == unprobed
    )


def test_many_answers_from_sends_in_flight_when_it_opened_leave_one_pause() -> None:
    circuit = opened(threshold=20, at=5.0, pause=60)
    for late in range(80):  # max_in_flight of them, from two processes, in any order
        circuit = after_attempt(
            circuit, RETRY, 5.0 + late / 1000, failure_threshold=20, open_seconds=60
        )
    assert (circuit.state, circuit.open_until, circuit.open_seconds) == ("open", 65.0, 60)


def test_the_pause_doubles_with_each_failed_probe_up_to_an_hour() -> None:
    circuit = opened(at=0.0, pause=10)
    now = 0.0
    pauses = []
    for number in range(12):
        now = circuit.open_until
        mark = f"probe-{number}"
        taken = take_probe(circuit, now, hold_seconds=35, mark=mark)
        assert taken is not None
        circuit = after_attempt(
            taken, TIMEOUT, now, probe=mark, failure_threshold=2, open_seconds=10
        )
        pauses.append(circuit.open_seconds)
        assert circuit.open_until == now + circuit.open_seconds
    assert pauses == [20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600, 3600]


def test_a_probe_judged_on_its_one_message_leaves_the_circuit_open_and_probes_again_at_once() -> (
    None
):
    circuit = opened(at=0.0, pause=10)
    taken = take_probe(circuit, 10.0, hold_seconds=35, mark=MARK)
    assert taken is not None
    after = after_attempt(taken, REJECTED, 10.5, probe=MARK, failure_threshold=2, open_seconds=10)
    assert (after.state, after.failures, after.open_seconds) == ("open", circuit.failures, 10)
    assert may_send(after, 10.5) == "probe"  # not held back for the rest of the probe's lease


def test_any_success_closes_an_open_circuit_the_subscriber_is_up() -> None:
    circuit = opened(at=0.0, pause=10)
    assert after_attempt(circuit, DELIVERED, 1.0, failure_threshold=2, open_seconds=10) == CLOSED


# 410 Gone.


@given(circuit=circuits, probe=marks)
def test_gone_disables_from_any_state_until_an_operator_says_otherwise(
    circuit: CircuitState, probe: str | None
) -> None:
    disabled = after_attempt(circuit, GONE, 0.0, probe=probe, failure_threshold=20, open_seconds=10)
    assert disabled.state == "disabled"
    assert may_send(disabled, now=10**9) == "no"
    for late in (DELIVERED, RETRY, REJECTED):
        assert (
            after_attempt(disabled, late, 1.0, probe=probe, failure_threshold=20, open_seconds=10)
            == disabled
        )


# The stored form.


@given(circuit=circuits)
def test_a_circuit_survives_the_store_s_bytes(circuit: CircuitState) -> None:
    assert decode_circuit(encode_circuit(circuit)) == circuit


def test_a_circuit_stored_before_probes_were_marked_still_reads() -> None:
    stored = b'{"state":"open","failures":20,"opened_at":5.0,"open_until":65.0,"open_seconds":60}'
    assert decode_circuit(stored) == CircuitState(
        state="open", failures=20, open_until=65.0, open_seconds=60
    )

"""docs/reference/delivery.md against subscribers that misbehave: a real `gateway serve`, and a raw
TCP subscriber (tests/delivery/misbehaving.py) that answers with a huge body, gzip garbage, a
trickle, silence, or a reset in the middle of its answer.

Each case asserts the attempts counted (in the store and at the subscriber), that no two
attempts of one delivery were ever under way at once, that the gateway's memory stayed bounded
(its peak RSS, VmHWM), and the delivery's final state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.delivery.misbehaving import HUGE_BYTES, Behaviour, MisbehavingSubscriber
from tests.delivery.subscriber import new_hmac_secret
from tests.delivery.test_delivery import (
    QUIET_SECONDS,
    SOON,
    config,
    delivery,
    post_event,
    subscriber_toml,
    wait_until,
)
from tests.service.harness import GatewayProcess

TIMEOUT_SECONDS = 1
SCHEDULE = [0.2, 0.2]  # three attempts
# How much the gateway's peak RSS may grow while it handles one misbehaving delivery: a
# fraction of what the huge answer sends (HUGE_BYTES), and room for the allocator's noise.
RSS_GROWTH_LIMIT = 64 * 1024 * 1024


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[[str], GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config_text: str) -> GatewayProcess:
        gateway = GatewayProcess(tmp_path, config_text).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
        print(f"--- gateway log ---\n{gateway.logs()[-6000:]}")  # shown when the test failed


@pytest.fixture
def misbehaving() -> Iterator[Callable[[Callable[[int], Behaviour]], MisbehavingSubscriber]]:
    started: list[MisbehavingSubscriber] = []

    def start(script: Callable[[int], Behaviour]) -> MisbehavingSubscriber:
        server = MisbehavingSubscriber(script).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (VmHWM in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def attempts_of(gateway: GatewayProcess, event_id: str) -> list[tuple[str, str | None, float]]:
    """(outcome, error, duration) of each recorded attempt, in order."""
    record = gateway.event_record(event_id)
    assert record is not None, event_id
    attempts = sorted(
        (attempt for delivery in record.deliveries for attempt in delivery.attempts),
        key=lambda attempt: attempt.started_at,
    )
    return [(attempt.outcome, attempt.error, attempt.duration) for attempt in attempts]


def run_case(
    start_gateway: Callable[[str], GatewayProcess],
    server: MisbehavingSubscriber,
    final_state: str,
    attempts: int,
) -> tuple[str, list[tuple[str, str | None, float]], int]:
    """One event to the misbehaving subscriber, until its delivery is `final_state`; its id,
    its attempts as recorded, and how much the gateway's peak RSS grew meanwhile."""
    gateway = start_gateway(
        config(
            subscriber_toml(
                "sink",
                server.url,
                [new_hmac_secret()],
                timeout_seconds=TIMEOUT_SECONDS,
                retry_schedule=SCHEDULE,
            ),
            routed=["sink"],
        )
    )
    assert gateway.process is not None
    pid = gateway.process.pid
    before = peak_rss(pid)
    event_id = post_event(gateway)
    wait_until(
        lambda: delivery(gateway, event_id, "sink")[0] == final_state,
        timeout=SOON,
        what=final_state,
    )
    time.sleep(QUIET_SECONDS)  # and nothing more goes out
    growth = peak_rss(pid) - before
    recorded = attempts_of(gateway, event_id)
    assert delivery(gateway, event_id, "sink") == (final_state, attempts)
    assert len(recorded) == attempts, recorded
    assert [r.attempt for r in server.requests] == list(range(1, attempts + 1))
    assert {r.webhook_id for r in server.requests} == {event_id}
    assert server.max_under_way_per_id == 1, "two attempts of one delivery at once"
    assert growth < RSS_GROWTH_LIMIT, f"the gateway's peak RSS grew {growth / 2**20:.0f} MiB"
    return event_id, recorded, growth


def test_a_huge_200_is_delivered_and_read_only_in_part(
    start_gateway: Callable[[str], GatewayProcess],
    misbehaving: Callable[[Callable[[int], Behaviour]], MisbehavingSubscriber],
) -> None:
    server = misbehaving(lambda _: "huge")
    _, recorded, growth = run_case(start_gateway, server, "delivered", 1)
    assert [outcome for outcome, _, _ in recorded] == ["delivered"]
    (request,) = server.requests
    print(f"sent {request.sent_bytes / 2**20:.0f} MiB before the hang-up; RSS +{growth} B")
    assert request.ended is not None, "the gateway kept the connection open"
    assert request.sent_bytes < HUGE_BYTES // 4, "the gateway read the whole answer"


def test_a_200_whose_gzip_body_is_garbage_is_delivered(
    start_gateway: Callable[[str], GatewayProcess],
    misbehaving: Callable[[Callable[[int], Behaviour]], MisbehavingSubscriber],
) -> None:
    server = misbehaving(lambda _: "gzip_garbage")
    _, recorded, _ = run_case(start_gateway, server, "delivered", 1)
    assert [outcome for outcome, _, _ in recorded] == ["delivered"]


def test_a_trickled_answer_is_cut_at_timeout_seconds_and_retried_until_dead(
    start_gateway: Callable[[str], GatewayProcess],
    misbehaving: Callable[[Callable[[int], Behaviour]], MisbehavingSubscriber],
) -> None:
    server = misbehaving(lambda _: "trickle")
    _, recorded, _ = run_case(start_gateway, server, "dead", 3)
    assert [(outcome, error) for outcome, error, _ in recorded] == [
        ("retry", "timeout"),
        ("retry", "timeout"),
        ("failed", "timeout"),
    ]
    for _, _, duration in recorded:
        # Cut at the deadline: bytes kept coming, so no per-read timeout would have fired.
        assert TIMEOUT_SECONDS - 0.05 <= duration < TIMEOUT_SECONDS + 0.5, recorded
    assert all(0 < r.sent_bytes < 20 for r in server.requests)


def test_a_subscriber_that_never_answers_times_out_and_is_retried_until_dead(
    start_gateway: Callable[[str], GatewayProcess],
    misbehaving: Callable[[Callable[[int], Behaviour]], MisbehavingSubscriber],
) -> None:
    server = misbehaving(lambda _: "silence")
    _, recorded, _ = run_case(start_gateway, server, "dead", 3)
    assert [error for _, error, _ in recorded] == ["timeout"] * 3
    assert all(duration < TIMEOUT_SECONDS + 0.5 for _, _, duration in recorded), recorded


def test_a_reset_in_the_middle_of_the_answer_is_retried(
    start_gateway: Callable[[str], GatewayProcess],
    misbehaving: Callable[[Callable[[int], Behaviour]], MisbehavingSubscriber],
) -> None:
    server = misbehaving(lambda attempt: "reset" if attempt == 1 else "ok")
    _, recorded, _ = run_case(start_gateway, server, "delivered", 2)
    (first_outcome, first_error, _), (second_outcome, _, _) = recorded
    assert (first_outcome, second_outcome) == ("retry", "delivered")
    assert first_error is not None
    assert first_error.startswith("connection error"), recorded

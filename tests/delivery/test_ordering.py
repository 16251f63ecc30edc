"""docs/reference/ordering.md (ordered delivery per subject), against a real `gateway serve`, one
and two worker processes, and a real HTTP subscriber that fails some events a few times.

Events are posted one at a time, each after the previous one's 200: that is their commit order.
Per subject the subscriber must see them one at a time in that order (each request after the
answer to the previous event's last one), a dead letter must let the next go, and subjects that
do not fail must not wait for the one that does.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from adapters.samples import sample_body
from tests.delivery.subscriber import Received, Reply, Subscriber, new_hmac_secret
from tests.delivery.test_delivery import _samples, config, subscriber_toml, wait_until
from tests.service.harness import GatewayProcess
from tests.support import TOKEN

STATUSES = ("CREATED", "PROCESSING", "COMPLETE")  # one payment's life, in order
FAILING = "pay_failing"  # its CREATED is answered 503 twice, then 200
DYING = "pay_dying"  # its CREATED is answered 400: a dead letter at once
STEADY = tuple(f"pay_{n:02d}" for n in range(10))  # always 200
# Two retries 4 s apart: the failing subject takes 8 s or more.
RETRY_SECONDS = 4.0


def answer(received: Received) -> Reply:
    event = json.loads(received.body)
    if event["providertype"] == "CREATED":
        if event["subject"] == FAILING and received.attempt <= 2:
            return Reply(503)
        if event["subject"] == DYING:
            return Reply(400)
    return Reply()


def post(gateway: GatewayProcess, subject: str, status: str, stored_at: dict[str, float]) -> str:
    """Post one event and note when it was answered 200 (stored) in `stored_at`."""
    body = json.loads(sample_body("finchpay", status, datetime.now(UTC)))
    body["id"] = subject
    response = gateway.post("finchpay", json.dumps(body).encode(), params={"token": TOKEN})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    event_id: str = response.json()["id"]
    stored_at[event_id] = time.monotonic()
    return event_id


def held(gateway: GatewayProcess) -> tuple[float | None, float | None]:
    samples = _samples(httpx.get(f"{gateway.base_url}/metrics", timeout=10).text)
    labels = frozenset({("subscriber", "ledger")})
    return (
        samples.get(("finrelay_delivery_held", labels)),
        samples.get(("finrelay_delivery_queue_depth", labels)),
    )


@pytest.fixture
def ledger() -> Iterator[tuple[Subscriber, str]]:
    secret = new_hmac_secret()
    with Subscriber([secret], script=answer) as server:
        yield server, secret


@pytest.mark.parametrize("workers", [1, 2])
def test_each_subject_arrives_one_at_a_time_in_commit_order(
    tmp_path: Path, ledger: tuple[Subscriber, str], workers: int
) -> None:
    server, secret = ledger
    text = config(
        subscriber_toml(
            "ledger",
            server.url,
            [secret],
            ordering="subject",
            retry_schedule=[RETRY_SECONDS, RETRY_SECONDS],
            circuit_breaker_failures=0,
        ),
        routed=["ledger"],
    )
    gateway = GatewayProcess(tmp_path, text, serve_args=("--workers", str(workers))).start()
    try:
        subjects = (FAILING, DYING, *STEADY)
        # When each was stored (the subscriber's clock too: one host's monotonic clock).
        stored_at: dict[str, float] = {}
        committed = {FAILING: [post(gateway, FAILING, status, stored_at) for status in STATUSES]}
        # Held behind the failing CREATED (waiting for its retry): its PROCESSING and COMPLETE,
        # as the store counts them at scrape time.
        wait_until(lambda: held(gateway) == (2, 3), what="2 held behind the failing subject")
        for subject in subjects[1:]:
            committed[subject] = [post(gateway, subject, status, stored_at) for status in STATUSES]
        done = 3 * len(subjects) - 1  # all but the dead CREATED
        wait_until(
            lambda: (
                sum(r.reply is not None and r.reply.status == 200 for r in server.received) == done
            ),
            timeout=30,
            what="every event delivered",
        )
        dead = [letter.event_id for letter in gateway.dead_letters("ledger")]
        assert dead == [committed[DYING][0]]
        assert held(gateway) == (0, 0)
    finally:
        gateway.stop()
        print(gateway.logs()[-6000:])

    received = server.received
    by_subject: dict[str, list[Received]] = {subject: [] for subject in subjects}
    for request in received:
        by_subject[json.loads(request.body)["subject"]].append(request)
    for subject, requests in by_subject.items():
        order = [committed[subject].index(request.webhook_id or "") for request in requests]
        # In commit order, each event's attempts together, the next after its last answer.
        assert order == sorted(order), (subject, order)
        for before, after in itertools.pairwise(requests):
            assert before.answered is not None
            assert after.arrived >= before.answered, (subject, order)
    # Released at once (the dispatcher that recorded the answer claims the next), not after a
    # poll (1 s): the median wait between an answer and the next event of its subject.
    gaps = sorted(
        after.arrived - before.answered
        for subject in (DYING, *STEADY)
        for before, after in itertools.pairwise(by_subject[subject])
        if before.answered is not None
    )
    assert gaps[len(gaps) // 2] < 0.25, gaps
    assert [r.attempt for r in by_subject[FAILING]] == [1, 2, 3, 1, 1]
    assert [r.reply.status for r in by_subject[DYING] if r.reply] == [400, 200, 200]
    # Nothing but the failing subject waited for its retries: every other event arrived
    # sooner after it was stored than one retry delay, and before the failing subject's
    # backoff ended (its CREATED's last attempt).
    failing = by_subject[FAILING]
    assert failing[2].arrived - failing[0].arrived >= 2 * RETRY_SECONDS - 0.01
    others = [r for subject in (DYING, *STEADY) for r in by_subject[subject]]
    assert max(r.arrived - stored_at[r.webhook_id or ""] for r in others) < RETRY_SECONDS
    assert max(r.arrived for r in others) < failing[2].arrived

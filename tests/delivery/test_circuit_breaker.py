"""docs/reference/delivery.md, the circuit breaker, against a real `gateway serve` of two worker
processes (each receiving and delivering, sharing the store) and a real HTTP subscriber.

Only failures that say the subscriber is unhealthy open a circuit: an answer about one message
(a 400 to every card event) never pauses the subscriber's other deliveries. And while a circuit
is open only the probe's own failure re-opens it: the other process's sends that were already
under way when it opened fail too, and change nothing, so a subscriber down for a few seconds
costs one pause. (tests/queues/test_redis.py does the same with Redis killed.)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.finfusion import sign_finfusion
from adapters.samples import sample_body
from gateway.delivery.circuit import CLOSED, CircuitState, decode_circuit
from tests.delivery.subscriber import Received, Reply, Subscriber, new_hmac_secret
from tests.delivery.test_delivery import SOON, config, post_many, subscriber_toml, wait_until
from tests.service.harness import GatewayProcess
from tests.support import SECRET, TOKEN

WORKERS = ("--workers", "2")
# A process looks for a due probe at least once a second (the dispatcher's poll); the rest is
# room for a loaded machine, and well below another pause.
LATE_PROBE_SECONDS = 2.5
FINFUSION = f"""
[sources.finfusion]
adapter = "finfusion"
secret = "{SECRET}"
"""


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Callable[[str], GatewayProcess]]:
    """Start `gateway serve` with two worker processes on a config; stopped after the test."""
    started: list[GatewayProcess] = []

    def start(config_text: str) -> GatewayProcess:
        workdir = tmp_path / f"gateway{len(started)}"
        workdir.mkdir()
        gateway = GatewayProcess(workdir, config_text, serve_args=WORKERS).start()
        started.append(gateway)
        wait_for_both_workers(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
        print(f"--- gateway log ({gateway.workdir}) ---\n" + gateway.logs()[-6000:])


@pytest.fixture
def http_subscriber() -> Iterator[Subscriber]:
    server = Subscriber([new_hmac_secret()]).start()
    yield server
    server.stop()


def wait_for_both_workers(gateway: GatewayProcess) -> None:
    """Until both workers have started (and so both deliver): /readyz answered for the first."""
    wait_until(lambda: gateway.logs().count('"event":"started"') >= 2, what="both workers started")


def circuit_of(gateway: GatewayProcess, subscriber: str) -> CircuitState:
    stored = gateway.with_store(lambda store: store.subscriber_circuits()).get(subscriber)
    return CLOSED if stored is None else decode_circuit(stored[1])


def circuit_log(gateway: GatewayProcess, subscriber: str) -> list[dict[str, Any]]:
    """The circuit's log lines, in order (every worker's: they share the log)."""
    lines = [json.loads(line) for line in gateway.logs().splitlines() if line.startswith("{")]
    return [
        line
        for line in lines
        if line["event"].startswith("circuit_") and line.get("subscriber") == subscriber
    ]


def assert_opened_once_then_probed_after_one_pause(
    gateway: GatewayProcess, subscriber: str, probe_at: float
) -> None:
    """One `circuit_open` then one `circuit_closed`, and the probe (sent at unix time
    `probe_at`) went once the pause that opening logged was over: not before, and not a pause
    later (a circuit re-opened by a failure that was no probe's pauses twice as long)."""
    lines = circuit_log(gateway, subscriber)
    assert [line["event"] for line in lines] == ["circuit_open", "circuit_closed"], lines
    open_until: float = lines[0]["open_until"]
    late = probe_at - open_until
    print(f"the probe went {late:.2f} s after the pause ended")
    assert -0.05 <= late <= LATE_PROBE_SECONDS, f"the probe went {late:.2f} s after the pause"


def event_type(received: Received) -> str:
    kind: str = json.loads(received.body)["type"]
    return kind


async def _post_all(gateway: GatewayProcess, posts: Sequence[tuple[str, bytes]]) -> None:
    """Each (source, body) posted, 16 at a time, signed or with the token as its source asks."""
    slots = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as client:

        async def post(source: str, body: bytes) -> None:
            if source == "finfusion":
                headers = sign_finfusion(body, SECRET, datetime.now(UTC))
                params = {}
            else:
                headers, params = {}, {"token": TOKEN}
            async with slots:
                response = await client.post(
                    f"/webhooks/{source}", content=body, headers=headers, params=params
                )
            assert response.status_code == 200, response.text

        await asyncio.gather(*(post(source, body) for source, body in posts))


def post_all(gateway: GatewayProcess, posts: Sequence[tuple[str, bytes]]) -> None:
    asyncio.run(_post_all(gateway, posts))


def test_a_subscriber_rejecting_one_kind_of_event_still_gets_the_others_at_once(
    two_workers: Callable[[str], GatewayProcess], http_subscriber: Subscriber
) -> None:
    """It answers 400 to card events and 200 to the rest: 40 card events are 40 dead letters,
    at once, and neither count as failures nor pause the other events (the circuit's defaults:
    20 failures, then 60 s)."""
    server = http_subscriber
    server.script = lambda received: Reply(400 if event_type(received).startswith("card.") else 200)
    gateway = two_workers(
        config(
            subscriber_toml("ledger", server.url, server.hmac_secrets, max_in_flight=8),
            routed=["ledger"],
        )
        + FINFUSION
    )
    now = datetime.now(UTC)
    post_all(
        gateway,
        [("finfusion", sample_body("finfusion", "card.transaction", now)) for _ in range(40)],
    )
    wait_until(lambda: gateway.stats()["dead"] == 40, what="40 card events dead")
    posted_others = time.monotonic()
    post_all(gateway, [("finchpay", sample_body("finchpay", "COMPLETE", now)) for _ in range(20)])

    wait_until(
        lambda: len(server.answered_ok()) == 20,
        timeout=SOON,
        what="the 20 other events delivered (not held for a 60 s pause)",
    )
    others = [r for r in server.received if not event_type(r).startswith("card.")]
    print(f"the other events arrived within {others[-1].arrived - posted_others:.2f} s")
    cards = [r for r in server.received if event_type(r).startswith("card.")]
    assert len(cards) == 40, "a card event was sent more than once (400: a dead letter at once)"
    assert {(r.reply.status if r.reply else None) for r in cards} == {400}
    assert circuit_of(gateway, "ledger") == CLOSED
    gateway.stop()
    assert circuit_log(gateway, "ledger") == []


DOWN = 3.0  # seconds the subscriber answers 503
PAUSE = 4.0  # circuit_breaker_seconds: longer than DOWN, so the first probe finds it up
EVENTS = 100


def test_a_subscriber_down_for_seconds_costs_one_pause_however_many_processes_send(
    two_workers: Callable[[str], GatewayProcess], http_subscriber: Subscriber
) -> None:
    """100 events arrive, delivered by two processes, while the subscriber answers 503 for 3 s.
    The circuit opens once; the other process's sends already under way when it opened fail
    too and change nothing (before the probe was marked, one re-opened it for twice as long);
    the probe after one pause finds the subscriber up, and everything is delivered."""
    server = http_subscriber
    gateway = two_workers(
        config(
            subscriber_toml(
                "ledger",
                server.url,
                server.hmac_secrets,
                retry_schedule=[0.5] * 10,
                circuit_breaker_seconds=PAUSE,
            ),
            routed=["ledger"],
        )
    )
    up_again = time.monotonic() + DOWN
    server.script = lambda received: Reply(503 if received.arrived < up_again else 200)
    ids = post_many(gateway, EVENTS)
    wait_until(
        lambda: len(server.answered_ok()) == EVENTS,
        timeout=DOWN + PAUSE + 10,  # one pause and a few seconds, on a loaded machine
        what=f"all {EVENTS} events delivered",
    )
    requests = server.received
    failed = [r for r in requests if r.reply and r.reply.status == 503]
    assert [r.reply.status for r in requests[: len(failed)] if r.reply] == [503] * len(failed)
    probe = requests[len(failed)]
    print(f"{len(failed)} failures, then the probe")
    assert circuit_of(gateway, "ledger") == CLOSED
    assert len(set(ids)) == EVENTS
    gateway.stop()
    assert_opened_once_then_probed_after_one_pause(gateway, "ledger", probe.arrived_wall)

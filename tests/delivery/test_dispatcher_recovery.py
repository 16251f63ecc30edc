"""The dispatch loop survives anything its step raises: it restarts by itself with backoff,
/readyz answers 503 while it is down (docs/reference/cli.md), and deliveries still arrive.

The fault is a store whose `claim_due` raises RuntimeError a few times: the app runs in this
process (under uvicorn, on a loopback port, the real SQLite store underneath), because a fault
has to be injected into the loop's step and a `gateway serve` subprocess offers no such hook.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn

from adapters.samples import sample_body
from gateway.app import build_app
from gateway.config import load_config
from gateway.delivery.dispatcher import SILENT_SECONDS
from gateway.store.base import Claim, ClaimRequest, StoreUnavailable
from gateway.store.sqlite import SQLiteStore
from tests.delivery.subscriber import Subscriber, new_hmac_secret
from tests.delivery.test_delivery import SOON, config, subscriber_toml
from tests.service.harness import free_port
from tests.support import TOKEN

FAULTS = 3  # crashes in a row: backoff 0.5 s, 1 s, 2 s, so /readyz is 503 for about 3.5 s


class FaultyStore(SQLiteStore):
    """The SQLite store, whose claims raise a bug-like RuntimeError while `faults` > 0."""

    faults = 0

    async def claim_due(self, request: ClaimRequest) -> Claim:
        if self.faults > 0:
            self.faults -= 1
            raise RuntimeError("injected fault")
        return await super().claim_due(request)


@pytest.fixture
def subscriber() -> Iterator[tuple[Subscriber, str]]:
    secret = new_hmac_secret()
    server = Subscriber([secret]).start()
    yield server, secret
    server.stop()


def serve(app: object, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + SOON
    while not server.started:
        assert time.monotonic() < deadline, "the gateway did not start"
        assert thread.is_alive(), "the gateway thread died"
        time.sleep(0.02)
    return server, thread


def test_the_dispatch_loop_restarts_after_unexpected_errors_and_readyz_says_so(
    tmp_path: Path, subscriber: tuple[Subscriber, str]
) -> None:
    server, secret = subscriber
    text = config(subscriber_toml("ledger", server.url, [secret]), routed=["ledger"])
    (tmp_path / "gateway.toml").write_text(text)
    store = FaultyStore(tmp_path / "gateway.db")  # build_app takes it instead of [store] url
    port = free_port()
    uvicorn_server, thread = serve(build_app(load_config(tmp_path / "gateway.toml"), store), port)
    base = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200

        store.faults = FAULTS
        body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
        posted = httpx.post(
            f"{base}/webhooks/finchpay", content=body, params={"token": TOKEN}, timeout=10
        )
        assert posted.status_code == 200, posted.text
        event_id = posted.json()["id"]

        answers: list[tuple[int, dict[str, str]]] = []
        deadline = time.monotonic() + SOON
        while not (answers and answers[-1][0] == 200 and any(a[0] == 503 for a in answers)):
            assert time.monotonic() < deadline, f"/readyz answers: {answers[-5:]}"
            response = httpx.get(f"{base}/readyz", timeout=5)
            answers.append((response.status_code, response.json()))
            time.sleep(0.05)
        unavailable = [body for status, body in answers if status == 503]
        assert unavailable[0] == {
            "status": "unavailable",
            "detail": "the dispatcher is not running",
        }
        assert store.faults == 0
        print(f"/readyz: {len(unavailable)} of {len(answers)} polls answered 503")

        server.wait_for_count(1, SOON)
        assert [r.webhook_id for r in server.received] == [event_id]
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()


class LostAnswerStore(SQLiteStore):
    """The SQLite store, whose next claims commit and then raise StoreUnavailable, as when a
    database connection is cut after the commit, before its answer arrived. A fault at that
    exact moment cannot be timed from outside a real process, hence the subclass."""

    lost_answers = 0

    async def claim_due(self, request: ClaimRequest) -> Claim:
        claimed = await super().claim_due(request)
        if claimed.deliveries and self.lost_answers > 0:
            self.lost_answers -= 1
            raise StoreUnavailable("the store's writer process closed the connection")
        return claimed


def test_deliveries_leased_by_a_claim_whose_answer_was_lost_go_out_within_seconds(
    tmp_path: Path, subscriber: tuple[Subscriber, str]
) -> None:
    # A 30 s timeout leases for 3 x 30 + 5 = 95 s: waiting for the lease to run out would
    # miss the deadline below by far. The dispatcher takes a new name instead, and gives back
    # the old name's leases at its next heartbeat (no send was under way under it).
    server, secret = subscriber
    settings = {"timeout_seconds": 30}
    text = config(subscriber_toml("ledger", server.url, [secret], **settings), routed=["ledger"])
    (tmp_path / "gateway.toml").write_text(text)
    store = LostAnswerStore(tmp_path / "gateway.db")
    port = free_port()
    uvicorn_server, thread = serve(build_app(load_config(tmp_path / "gateway.toml"), store), port)
    base = f"http://127.0.0.1:{port}"
    try:
        store.lost_answers = 1
        body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
        posted = httpx.post(
            f"{base}/webhooks/finchpay", content=body, params={"token": TOKEN}, timeout=10
        )
        assert posted.status_code == 200, posted.text
        started = time.monotonic()
        server.wait_for_count(1, SILENT_SECONDS + 10)
        waited = time.monotonic() - started
        assert store.lost_answers == 0
        assert [r.webhook_id for r in server.received] == [posted.json()["id"]]
        print(f"delivered {waited:.1f} s after a lost claim answer (lease: 95 s)")
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()

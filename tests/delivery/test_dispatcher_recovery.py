"""The dispatch loop survives anything its step raises: it restarts by itself with backoff,
/readyz answers 503 while it is down (CONTRACT.md 6), and deliveries still arrive.

The fault is a store whose `claim_due` raises RuntimeError a few times: the app runs in this
process (under uvicorn, on a loopback port, the real SQLite store underneath), because a fault
has to be injected into the loop's step and a `gateway serve` subprocess offers no such hook.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn

from adapters.samples import sample_body
from gateway.app import build_app
from gateway.config import load_config
from gateway.store.base import ClaimedDelivery
from gateway.store.sqlite import SQLiteStore
from tests.delivery.subscriber import Subscriber, new_hmac_secret
from tests.delivery.test_delivery import SOON, config, subscriber_toml
from tests.service.harness import free_port
from tests.support import TOKEN

FAULTS = 3  # crashes in a row: backoff 0.5 s, 1 s, 2 s, so /readyz is 503 for about 3.5 s


class FaultyStore(SQLiteStore):
    """The SQLite store, whose claims raise a bug-like RuntimeError while `faults` > 0."""

    faults = 0

    async def claim_due(
        self, *, subscriber: str, limit: int, lease_seconds: float, owner: str
    ) -> Sequence[ClaimedDelivery]:
        if self.faults > 0:
            self.faults -= 1
            raise RuntimeError("injected fault")
        return await super().claim_due(
            subscriber=subscriber, limit=limit, lease_seconds=lease_seconds, owner=owner
        )


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

"""A bug inside the webhook handler answers 500 with the request id, and is logged; the
gateway keeps serving. In process, through httpx's ASGI transport: a bug cannot be provoked in a
real server from outside, so the store here is a real SQLite store whose `accept` raises."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import structlog

from adapters.samples import sample_body
from gateway.app import build_app
from gateway.config import load_config
from gateway.store.base import AcceptOutcome, NewEvent
from gateway.store.sqlite import SQLiteStore
from tests.support import TOKEN

CONFIG = f"""
[store]
url = "sqlite:///./data/gateway.db"

[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"

[subscribers.audit]
kind = "file"
path = "./data/events.jsonl"

[[routes]]
subscribers = ["audit"]
"""


class BrokenStore(SQLiteStore):
    async def accept(self, event: NewEvent) -> AcceptOutcome:
        raise RuntimeError("a bug")


def test_a_bug_in_the_handler_answers_500_with_the_request_id(tmp_path: Path) -> None:
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(CONFIG)
    store = BrokenStore(tmp_path / "gateway.db")
    app = build_app(load_config(config_path), store)

    async def scenario() -> list[httpx.Response]:
        await store.open()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                answers = []
                for request_id in ("bug-1", "bug-2"):
                    answers.append(
                        await client.post(
                            "/webhooks/finchpay",
                            params={"token": TOKEN},
                            content=sample_body("finchpay", "COMPLETE", datetime.now(UTC)),
                            headers={"x-request-id": request_id},
                        )
                    )
                answers.append(await client.post("/webhooks/nowhere", content=b"{}"))
                return answers
        finally:
            await store.close()

    with structlog.testing.capture_logs() as logged:
        first, second, unknown = asyncio.run(scenario())
    for answer, request_id in ((first, "bug-1"), (second, "bug-2")):
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal"}
        assert answer.headers["x-request-id"] == request_id
    errors = [entry for entry in logged if entry["event"] == "ingress_error"]
    assert [entry["request_id"] for entry in errors] == ["bug-1", "bug-2"]
    # Still serving: the next request gets its ordinary answer.
    assert unknown.status_code == 404
    assert unknown.headers["x-request-id"]

"""The admin API when the store cannot answer: 503 with a reason, never a 500 (in process, over
httpx's ASGI transport, with a real SQLiteStore that is not open)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from adapters.source import Secret
from gateway.admin.api import AdminApi
from gateway.config import AdminConfig, FileSubscriber, GatewayConfig
from gateway.store.sqlite import SQLiteStore


def test_a_store_that_cannot_answer_is_503(tmp_path: Path) -> None:
    config = GatewayConfig(
        admin=AdminConfig(tokens=(Secret("t0ken-for-this-test"),)),
        subscribers={"a": FileSubscriber(name="a", path=tmp_path / "a.jsonl")},
    )
    app = AdminApi(config, SQLiteStore(tmp_path / "gateway.db"))  # never opened

    async def ask() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://admin",
            headers={"Authorization": "Bearer t0ken-for-this-test"},
        ) as client:
            return [
                await client.get("/events"),
                await client.get("/subscribers"),
                await client.post("/subscribers/a/pause"),
            ]

    for answer in asyncio.run(ask()):
        assert answer.status_code == 503
        assert answer.json()["error"] == "unavailable"
        assert "not open" in answer.json()["detail"]

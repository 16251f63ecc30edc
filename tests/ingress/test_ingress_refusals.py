"""A refusal whose code the ingress has no status for answers 401, not a KeyError's 500. No real
adapter raises such a code, so a fake one does here, in process (httpx's ASGI transport) with a
real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import httpx
import msgspec
import structlog

from adapters.base import Adapter, Facts
from adapters.errors import AuthenticationError
from adapters.request import InboundRequest
from adapters.source import SourceSettings
from gateway.app import build_app
from gateway.config import load_config
from gateway.store.sqlite import SQLiteStore

CONFIG = """
[store]
url = "sqlite:///./data/gateway.db"

[sources.novel]
adapter = "finfusion"
secret = "whsec_test_5ZKpTHxVXvSkkdrPAbK8oeLjYr9qc3Rz"
"""


class ExpiredCredentials(AuthenticationError):
    """A refusal an adapter might add one day, before anyone maps its code to a status."""

    code: ClassVar[str] = "expired_credentials"


def refuse(request: InboundRequest, settings: SourceSettings, now: datetime) -> None:
    raise ExpiredCredentials("the signing key expired on 2026-01-01")


def never_read(
    body: bytes, headers: Mapping[str, str], settings: SourceSettings, received_at: datetime
) -> Facts:
    raise AssertionError("a refused request is never read")


def test_an_unmapped_refusal_code_is_401_not_500(tmp_path: Path) -> None:
    fake = Adapter(name="finfusion", read_facts=never_read, check_signature=refuse)
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(CONFIG)
    config = load_config(config_path)
    config = msgspec.structs.replace(config, adapters={**config.adapters, "finfusion": fake})
    store = SQLiteStore(tmp_path / "gateway.db")
    app = build_app(config, store)

    async def scenario() -> httpx.Response:
        await store.open()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                return await client.post("/webhooks/novel", content=b"{}")
        finally:
            await store.close()

    with structlog.testing.capture_logs() as logged:
        answer = asyncio.run(scenario())
    assert answer.status_code == 401
    # A generic refusal: the adapter's detail is for the log, not for whoever posted.
    assert answer.json() == {"error": "unauthenticated"}
    (line,) = [entry for entry in logged if entry["event"] == "webhook"]
    assert line["code"] == "expired_credentials"
    assert line["status"] == 401
    assert not [entry for entry in logged if entry["event"] == "ingress_error"]

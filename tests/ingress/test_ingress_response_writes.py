"""A webhook's answer leaves uvicorn in one write: its head and body together
(gateway/ingress/answers.py, `_HeadWithBody`), where uvicorn alone writes them one after the
other (two send() calls).

uvicorn's own httptools protocol serves the real app (a real SQLite store) in process. Its
transport here keeps each write as it was made: a socket would merge them on the way, and the
write boundaries are the thing checked.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from adapters.samples import sample_body
from gateway.app import build_app
from gateway.config import load_config
from gateway.store.sqlite import SQLiteStore

TOKEN = "tok_response_writes_1"
CONFIG = f"""
[store]
url = "sqlite:///./data/gateway.db"

[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"
"""


class KeptWrites(asyncio.Transport):
    """A connection's transport that keeps every write, and whether it was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        return

    def resume_reading(self) -> None:
        return


def request(target: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {target} HTTP/1.1", "Host: gw", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def serve(tmp_path: Path, raw_requests: list[bytes]) -> KeptWrites:
    """Each request through uvicorn's protocol on one connection, one after the other; the
    transport once every answer has been written (or 5 s have passed)."""
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(CONFIG)
    store = SQLiteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        server_config = uvicorn.Config(
            build_app(load_config(config_path), store),
            http="httptools",
            log_config=None,
            access_log=False,
            proxy_headers=False,
        )
        server_config.load()
        protocol = HttpToolsProtocol(
            config=server_config,
            server_state=ServerState(),
            app_state={},
            _loop=asyncio.get_running_loop(),
        )
        transport = KeptWrites()
        protocol.connection_made(transport)
        for number, raw in enumerate(raw_requests, start=1):
            protocol.data_received(raw)
            deadline = asyncio.get_running_loop().time() + 5
            while _answers(transport) < number and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.001)
        return transport
    finally:
        await store.close()


def _answers(transport: KeptWrites) -> int:
    return b"".join(transport.writes).count(b"HTTP/1.1 ")


def test_each_webhook_answer_is_one_write_of_head_and_body(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    raw_requests = [
        request(f"/webhooks/finchpay?token={TOKEN}", sample_body("finchpay", "COMPLETE", now)),
        request(f"/webhooks/finchpay?token={TOKEN}", b"not json"),  # 422, quarantined
        request("/webhooks/finchpay?token=wrong", b"{}"),  # 401
    ]
    transport = asyncio.run(serve(tmp_path, raw_requests))
    assert len(transport.writes) == 3
    for write, status in zip(transport.writes, (200, 422, 401), strict=True):
        head, _, body = write.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status)
        assert b"\r\ncontent-length: %d" % len(body) in head
        assert b"\r\nx-request-id: " in head
    assert not transport.closed


def test_an_answer_to_a_closing_client_is_written_whole_before_the_connection_closes(
    tmp_path: Path,
) -> None:
    body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    raw = request(f"/webhooks/finchpay?token={TOKEN}", body, "Connection: close")
    transport = asyncio.run(serve(tmp_path, [raw]))
    (write,) = transport.writes
    head, _, answer = write.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b'"status":"accepted"' in answer
    assert transport.closed


def test_an_answer_to_head_is_its_head_alone_whether_or_not_the_client_stays(
    tmp_path: Path,
) -> None:
    # uvicorn writes no body for HEAD: the head held for it is written all the same.
    head = f"HEAD /webhooks/finchpay?token={TOKEN} HTTP/1.1\r\nHost: gw\r\n"
    head_requests = [f"{head}\r\n".encode(), f"{head}Connection: close\r\n\r\n".encode()]
    transport = asyncio.run(serve(tmp_path, head_requests))
    assert len(transport.writes) == 2
    for write in transport.writes:
        assert write.startswith(b"HTTP/1.1 405 ")
        assert write.endswith(b"\r\n\r\n")
    assert transport.closed

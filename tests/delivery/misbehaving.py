"""A subscriber that misbehaves at the HTTP level, which no well-behaved server framework will:
a raw asyncio TCP server on a loopback port, in a thread.

It reads each request (headers and body), then answers as its script says for that attempt:
a huge 200 streamed without end, a 200 whose gzip body is garbage, an answer trickled a byte at
a time, silence, or a connection reset in the middle of the answer. It records every request
per webhook-id, when its handling ended, and the most requests of one webhook-id it ever had
under way at once (a request is under way until its answer is complete or its connection is
gone).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Behaviour", "MisbehavingSubscriber", "Request"]

Behaviour = Literal["ok", "huge", "gzip_garbage", "trickle", "silence", "reset"]

# What a "huge" answer sends at most (it stops earlier when the reader goes away): far more than
# the gateway may hold, so reading it whole would show in the gateway's memory.
HUGE_BYTES = 512 * 1024 * 1024
HUGE_CHUNK = b"x" * (256 * 1024)
TRICKLE_INTERVAL = 0.2
# No answer is held longer than this, whatever the gateway does: tests end.
MAX_HOLD_SECONDS = 30.0


@dataclass
class Request:
    webhook_id: str
    attempt: int  # 1-based among the requests with this webhook-id
    behaviour: Behaviour
    arrived: float  # time.monotonic()
    ended: float | None = None  # when its answer was complete or its connection gone
    sent_bytes: int = 0


class MisbehavingSubscriber:
    def __init__(self, script: Callable[[int], Behaviour]) -> None:
        """`script(attempt)`: how to answer the attempt-th request of a webhook-id."""
        self.script = script
        self.port = 0
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._per_id: collections.Counter[str] = collections.Counter()
        self._under_way: collections.Counter[str] = collections.Counter()
        self.max_under_way_per_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def start(self) -> MisbehavingSubscriber:
        self._thread = threading.Thread(target=self._serve, name="misbehaving", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("misbehaving subscriber did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> MisbehavingSubscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # requests on this (keep-alive) connection
                request = await self._read_request(reader)
                if request is None:
                    return
                try:
                    keep_open = await self._answer(request, reader, writer)
                finally:
                    self._end(request)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            return
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        await reader.readexactly(int(headers.get("content-length", "0")))
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            self._per_id[webhook_id] += 1
            self._under_way[webhook_id] += 1
            self.max_under_way_per_id = max(self.max_under_way_per_id, self._under_way[webhook_id])
            attempt = self._per_id[webhook_id]
            request = Request(
                webhook_id=webhook_id,
                attempt=attempt,
                behaviour=self.script(attempt),
                arrived=time.monotonic(),
            )
            self._requests.append(request)
        return request

    def _end(self, request: Request) -> None:
        with self._lock:
            request.ended = time.monotonic()
            self._under_way[request.webhook_id] -= 1

    async def _answer(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer as the script says; whether the connection may carry another request."""
        behaviour = request.behaviour
        if behaviour == "ok":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            return True
        if behaviour == "gzip_garbage":
            body = b"this is not gzip at all" * 4
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-type: text/plain\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            return True
        if behaviour == "huge":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % HUGE_BYTES)
            while request.sent_bytes < HUGE_BYTES:
                writer.write(HUGE_CHUNK)
                await writer.drain()  # raises once the gateway hangs up
                request.sent_bytes += len(HUGE_CHUNK)
            return True
        if behaviour == "trickle":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            deadline = time.monotonic() + MAX_HOLD_SECONDS
            while time.monotonic() < deadline and request.sent_bytes < 1000:
                writer.write(b"x")
                await writer.drain()
                request.sent_bytes += 1
                if await _closed_within(reader, TRICKLE_INTERVAL):
                    return False
            return False
        if behaviour == "silence":
            await _closed_within(reader, MAX_HOLD_SECONDS)
            return False
        # reset: the status line, headers and a little of the body, then a TCP RST.
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the peer closed the connection within `seconds` (it sends nothing more)."""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""

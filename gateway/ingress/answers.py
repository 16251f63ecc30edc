"""A webhook request's answer: what it says (`Answer`) and how it is written (`Responder`), in
JSON with the request's `x-request-id`, head and body in one write under uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import msgspec
from starlette.types import Message, Send
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

__all__ = ["Answer", "Responder"]

_JSON_HEADERS = [(b"content-type", b"application/json")]

_encoder = msgspec.json.Encoder()


class Answer:
    """A JSON answer and what the request log line says about it; `headers` go with it, and
    `then` runs once it is written, before the response ends (what the request still has to
    read: gateway/ingress/body.py, `_discard_rest`)."""

    __slots__ = ("content", "fields", "headers", "status", "then")

    def __init__(
        self,
        status: int,
        content: Mapping[str, object],
        *,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        then: Callable[[], Awaitable[None]] | None = None,
        **fields: object,
    ) -> None:
        self.status = status
        self.content = content
        self.headers = headers
        self.then = then
        self.fields = fields


class Responder:
    """Answers one webhook request in JSON, with its `x-request-id`, and knows whether it has
    begun to (after that, an error can only be logged)."""

    __slots__ = ("request_id", "send", "started")

    def __init__(self, send: Send, request_id: str) -> None:
        self.send = send
        self.request_id = request_id
        self.started = False

    async def json(
        self,
        status: int,
        content: Mapping[str, object],
        *extra_headers: tuple[bytes, bytes],
        then: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Send the answer; with `then`, run it once the answer is written and end the
        response after it (the request's body can be read until then)."""
        body = _encoder.encode(content)
        headers = [
            *_JSON_HEADERS,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", self.request_id.encode("ascii")),
            *extra_headers,
        ]
        self.started = True
        start: Message = {"type": "http.response.start", "status": status, "headers": headers}
        end: Message = {"type": "http.response.body", "body": body, "more_body": then is not None}
        await self._send_joined(start, end)
        if then is not None:
            await then()
            await self.send({"type": "http.response.body", "body": b""})

    async def _send_joined(self, start: Message, end: Message) -> None:
        cycle = getattr(self.send, "__self__", None)
        if not isinstance(cycle, RequestResponseCycle):
            await self.send(start)
            await self.send(end)
            return
        # uvicorn writes the head and the body to the transport one after the other, and
        # uvloop sends each at once: two send() system calls, two loopback segments, two
        # wake-ups of the client, for one small answer. Its cycle is given a transport that
        # keeps the head for the body's write (its send() writes, and may close, nothing else).
        transport = cycle.transport
        joined = _HeadWithBody(transport)
        cycle.transport = joined
        try:
            await self.send(start)
            await self.send(end)
        finally:
            cycle.transport = transport
            joined.release()


class _HeadWithBody(asyncio.Transport):
    """A transport that holds the first write (a response's head) and writes it with the next
    one (its body): one write where there were two."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._head = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._head:
            self._head = bytes(data)
            return
        head, self._head = self._head, b""
        self._transport.write(head + data)

    def release(self) -> None:
        """Write what is still held (a head whose body never came)."""
        if self._head and not self._transport.is_closing():
            self._transport.write(self._head)
        self._head = b""

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.release()
        self._transport.close()

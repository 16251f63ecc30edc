"""The wire between the SQLite writer process and the processes that use its store.

One Unix socket connection per process carries many calls at once (pipelined): a frame is a
4-byte big-endian length and a msgpack message. A `Call` names a `Store` method and carries its
arguments, in the method's parameter order; the `Reply` repeats the call's id, in whatever
order the calls finish (a group commit answers a whole batch at once). A reply with id 0 is not
an answer but news the writer pushes: deliveries became due (`NEWS_DELIVERIES`).

Every call is typed at both ends by the `Store` interface itself (`METHODS`): what a method
takes and returns is what msgspec encodes and decodes, so a new store method travels without a
line here.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable
from typing import Any, Final

import msgspec

from gateway.store import base
from gateway.store.base import Store

__all__ = [
    "ERROR_INTERNAL",
    "ERROR_NONE",
    "ERROR_SCHEMA",
    "ERROR_UNAVAILABLE",
    "HEADER_BYTES",
    "MAX_FRAME_BYTES",
    "METHODS",
    "NEWS_DELIVERIES",
    "WATCH",
    "FrameReader",
    "FrameTooLarge",
    "InCall",
    "InReply",
    "Method",
    "OutCall",
    "OutReply",
    "Outbox",
    "frame",
]

HEADER_BYTES: Final = 4
# Bounds what one side buffers for one frame. Bodies are bounded by `server.max_body_bytes`
# (at most 64 MiB); a page of events carries at most a few hundred of them.
MAX_FRAME_BYTES: Final = 512 * 1024 * 1024

ERROR_NONE: Final = 0
ERROR_UNAVAILABLE: Final = 1  # StoreUnavailable: the caller answers 503, retries later
ERROR_SCHEMA: Final = 2  # StoreSchemaError
ERROR_INTERNAL: Final = 3  # a bug on the writer's side (its log has the traceback)

# Not a store method: "tell this connection when deliveries may have become due".
WATCH: Final = "watch_new_deliveries"
NEWS_DELIVERIES: Final = "deliveries"


class OutCall(msgspec.Struct, array_like=True):
    id: int
    method: str
    args: tuple[Any, ...]


class InCall(msgspec.Struct, array_like=True):
    id: int
    method: str
    args: msgspec.Raw


class OutReply(msgspec.Struct, array_like=True):
    id: int
    error: int
    detail: str
    result: Any


class InReply(msgspec.Struct, array_like=True):
    id: int
    error: int
    detail: str
    result: msgspec.Raw


class Method(msgspec.Struct, frozen=True):
    """One store method as the wire sees it: decoders for its arguments (as an array, in
    parameter order) and its result, and the names to call it with."""

    name: str
    parameters: tuple[str, ...]
    arguments: msgspec.msgpack.Decoder[Any]
    result: msgspec.msgpack.Decoder[Any]


def _method(name: str, function: Callable[..., Any]) -> Method:
    hints = typing.get_type_hints(function, vars(base))
    parameters = [p for p in inspect.signature(function).parameters.values() if p.name != "self"]
    fields = [(p.name, hints[p.name]) for p in parameters]
    # An argument too many is refused, never dropped: the two ends disagree on the method.
    arguments = msgspec.defstruct(
        f"{name}_arguments", fields, array_like=True, forbid_unknown_fields=True
    )
    result = hints["return"]
    return Method(
        name=name,
        parameters=tuple(p.name for p in parameters),
        arguments=msgspec.msgpack.Decoder(arguments),
        result=msgspec.msgpack.Decoder(None if result is type(None) else result),
    )


def _methods() -> dict[str, Method]:
    # Every coroutine of the interface but the two that are the connection's own business.
    return {
        name: _method(name, function)
        for name, function in vars(Store).items()
        if inspect.iscoroutinefunction(function) and name not in ("open", "close")
    }


METHODS: Final[dict[str, Method]] = _methods()

_encoder = msgspec.msgpack.Encoder()


def frame(message: OutCall | OutReply) -> bytes:
    payload = _encoder.encode(message)
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


class FrameTooLarge(Exception):
    """A header announced more than MAX_FRAME_BYTES: the peer is broken or hostile."""

    def __init__(self, size: int) -> None:
        super().__init__(f"a frame of {size} bytes")
        self.size = size


class FrameReader:
    """The frames of a byte stream, however the stream is cut into reads: `feed` takes what
    one read brought and returns the payloads it completed, in order.

    Both ends parse in their protocol's `data_received` (no reader task to wake, and a read
    that brought a hundred frames is one pass over it); the bytes of a frame not yet complete
    wait here."""

    def __init__(self) -> None:
        self._partial = bytearray()
        # How long `_partial` must grow before it holds a whole frame (or a whole header):
        # a large frame arriving in many reads is gathered, not parsed again at each.
        self._needed = 0

    def feed(self, data: bytes) -> list[bytes]:
        if self._partial:
            self._partial += data
            if len(self._partial) < self._needed:
                return []
            data = bytes(self._partial)
            self._partial.clear()
        payloads = []
        start, end = 0, len(data)
        self._needed = HEADER_BYTES
        while end - start >= HEADER_BYTES:
            size = int.from_bytes(data[start : start + HEADER_BYTES], "big")
            if size > MAX_FRAME_BYTES:
                raise FrameTooLarge(size)
            if end - start - HEADER_BYTES < size:
                self._needed = HEADER_BYTES + size
                break
            start += HEADER_BYTES
            payloads.append(data[start : start + size])
            start += size
        if start < end:
            self._partial += data[start:]
        return payloads


class Outbox:
    """Frames for one connection, written together once per event loop turn: a group commit
    answers hundreds of calls at once, and a busy worker sends as many in one turn. One
    write (one system call) for all of them instead of one each."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        self._frames: list[bytes] = []

    def send(self, message: OutCall | OutReply) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(frame(message))

    def _flush(self) -> None:
        frames, self._frames = self._frames, []
        if not self._transport.is_closing():
            self._transport.writelines(frames)

    @property
    def unsent_bytes(self) -> int:
        return self._transport.get_write_buffer_size()

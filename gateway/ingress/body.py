"""A webhook request's body, read whole within `server.max_body_bytes`: 413 as soon as it
proves longer (the rest read and dropped after the answer, never kept), 400 when the client cuts
it short."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.types import Receive

from gateway.ingress.answers import Answer

__all__ = ["read_body"]

# What is left of a body over the limit is read and thrown away after the 413, never kept, up
# to this much of the whole body (or four times server.max_body_bytes, if more) and for this
# long: long enough for a provider's client to finish sending a body of a few megabytes, short
# enough that nobody can hold the connection to upload more.
_DISCARD_BYTES = 16 * 1024 * 1024
_DISCARD_SECONDS = 10.0
_CLOSE = (b"connection", b"close")


def _too_large(receive: Receive, read: int, bound: int, declared: int | None = None) -> Answer:
    """413 for a body over the limit, `read` bytes of it read so far and `declared` its
    content-length (None: chunked); the connection closes after it.

    Before it closes, the rest of the body is read and dropped (`_discard_rest`), up to
    `bound` bytes in all: a client that sends its whole body before reading the answer
    (Python's urllib and http.client, many SDKs) would otherwise still be sending when the
    connection closes, the kernel would reset it over the unread bytes, and the client would
    see a broken pipe (a network error, retried as one) where there is a 413. A body declared
    longer than `bound` is not read at all: the client could not finish sending it anyway."""
    discard = max(read, declared or 0) <= bound
    return Answer(
        413,
        {"error": "payload_too_large"},
        headers=(_CLOSE,),
        then=(lambda: _discard_rest(receive, read, bound)) if discard else None,
        outcome="payload_too_large",
    )


async def _discard_rest(receive: Receive, read: int, bound: int) -> None:
    """Read what is left of a refused body and drop each piece as it comes: until the body
    ends, the client leaves, `bound` bytes of it in all, or `_DISCARD_SECONDS`."""
    try:
        async with asyncio.timeout(_DISCARD_SECONDS):
            while read <= bound:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        return


def _cut_short(size: int, declared: str) -> Answer:
    # Answered in case the client still listens (it usually does not: the server then sends
    # nothing), and logged with the request.
    expected = f" of {declared}" if declared else ""
    return Answer(
        400,
        {"error": "incomplete_body"},
        outcome="incomplete_body",
        detail=f"the client closed the request after {size}{expected} bytes of its body",
    )


async def read_body(headers: Mapping[str, str], receive: Receive, max_body: int) -> bytes | Answer:
    """The whole body; or the answer when there is none to use: 413 as soon as it proves
    longer than the limit (the rest never kept: `_too_large`), 400 when the client cut it
    short."""
    declared = headers.get("content-length", "")
    discard_bound = max(_DISCARD_BYTES, 4 * max_body)
    if declared.isdigit() and int(declared) > max_body:
        # Answered before reading a byte of it: `_too_large` reads the rest after the 413.
        return _too_large(receive, 0, discard_bound, int(declared))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # A prefix of a body is not the body: verifying it fails at best, and a prefix
            # that happens to be valid JSON (or not JSON, for a token-authenticated source)
            # would be stored or quarantined as if the provider had sent it.
            return _cut_short(size, declared)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            # Chunked (no content-length): how much more comes is unknown.
            return _too_large(receive, size, discard_bound)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if declared.isdigit() and size < int(declared):
        return _cut_short(size, declared)
    return b"".join(chunks)

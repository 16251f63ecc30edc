"""The file subscriber: one JSON object per delivery and line (docs/reference/delivery.md).

`{"webhook-id", "webhook-timestamp", "webhook-signature", "event"}`, the event embedded as the
very bytes a webhook subscriber would receive. A delivery counts as done once its line is on
disk (fsync'd); lines written while an fsync runs share the next one, so a burst costs a few
fsyncs, not one per line.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec

from gateway.delivery.transport import AttemptSpan, OutboundMessage, SendResult, Transport

__all__ = ["FileTransport"]


class _Line(msgspec.Struct, frozen=True):
    webhook_id: str = msgspec.field(name="webhook-id")
    webhook_timestamp: int = msgspec.field(name="webhook-timestamp")
    webhook_signature: str | None = msgspec.field(name="webhook-signature")
    event: msgspec.Raw


class FileTransport(Transport):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._encoder = msgspec.json.Encoder()
        self._flush_lock = asyncio.Lock()
        self._written = 0  # lines written so far
        self._synced = 0  # lines known to be on disk

    def _open(self) -> int:
        if self._fd is None:
            # The directory is never created here: `gateway serve` checks it exists at start,
            # and a path that vanished later is an error to retry, not a tree to make.
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    async def send(self, message: OutboundMessage) -> SendResult:
        line = self._encoder.encode(
            _Line(
                webhook_id=message.webhook_id,
                webhook_timestamp=message.webhook_timestamp,
                webhook_signature=message.webhook_signature,
                event=msgspec.Raw(message.body),
            )
        )
        try:
            # O_APPEND makes each write land whole at the end, even with several writers.
            os.write(self._open(), line + b"\n")
            self._written += 1
            await self._sync(self._written)
        except OSError as error:
            return SendResult(outcome="retry", error=f"cannot write {self.path}: {error.strerror}")
        return SendResult(outcome="delivered")

    def attempt_span(self, event_type: str, source: str, attempt: int) -> AttemptSpan:
        # No trace context goes into the line: its format is the contract's
        # (docs/reference/delivery.md), and the event in it carries the event's own `traceparent`
        # already.
        return AttemptSpan("write", {"file.path": str(self.path)})

    async def _sync(self, line_number: int) -> None:
        """Return once line `line_number` is on disk. One fsync covers every line written
        before it started, so the sends waiting behind it need none of their own."""
        async with self._flush_lock:
            if self._synced >= line_number:
                return
            covered = self._written
            await asyncio.to_thread(os.fsync, self._open())
            self._synced = covered

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

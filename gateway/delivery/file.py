"""The file subscriber: one JSON object per delivery and line (CONTRACT.md 4).

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

from gateway.delivery.transport import OutboundMessage, SendResult, Transport

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
        self._flushed: asyncio.Future[None] | None = None
        self._flush_lock = asyncio.Lock()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
            await self._sync()
        except OSError as error:
            return SendResult(outcome="retry", error=f"cannot write {self.path}: {error.strerror}")
        return SendResult(outcome="delivered")

    async def _sync(self) -> None:
        # Group fsync: whoever finds no fsync pending starts one for everybody written so far.
        async with self._flush_lock:
            fd = self._open()
            await asyncio.to_thread(os.fsync, fd)

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

"""The one interface every subscriber kind implements, as httpx's transports do for I/O.

The dispatcher hands a transport an `OutboundMessage` (the event's bytes, encoded once, and the
Standard Webhooks values of this attempt) and gets back a `SendResult`: it never knows whether it
is driving HTTP, a file or a queue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import msgspec

__all__ = ["OutboundMessage", "SendResult", "Transport"]


class OutboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: str
    webhook_timestamp: int
    webhook_signature: str | None
    body: bytes
    # The event's canonical type and source name, for queue subscribers' `{type}` / `{source}`
    # templates (CONTRACT.md 4a); HTTP and file subscribers ignore them.
    event_type: str = ""
    source: str = ""


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """`delivered`; `retry` (worth another attempt); `failed` (permanent: a dead letter now)."""

    outcome: Literal["delivered", "retry", "failed"]
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    response_excerpt: str | None = None


class Transport(ABC):
    """Sends messages to one subscriber."""

    @abstractmethod
    async def send(self, message: OutboundMessage) -> SendResult:
        """Send one message; report the outcome instead of raising."""

    async def close(self) -> None:  # noqa: B027 - most transports hold nothing to release
        """Release connections or files."""

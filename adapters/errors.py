"""What can go wrong when a provider's request is checked and read.

One small hierarchy, as in httpx: every error carries a stable `code` (the `error` field of the
HTTP answer) and a `detail` sentence for a human. Neither ever contains a secret, a signature or
a token, because both end up in logs and in the response to whoever posted the request.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AdapterError",
    "AuthenticationError",
    "ForbiddenAddress",
    "InvalidPayload",
    "InvalidSignature",
    "InvalidToken",
]


class AdapterError(Exception):
    """Base of every error an adapter raises."""

    code: ClassVar[str] = "adapter_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AuthenticationError(AdapterError):
    """The request does not prove it comes from the provider; nothing of it is stored."""


class ForbiddenAddress(AuthenticationError):
    """The client address is outside the source's `allow_ips`."""

    code = "forbidden_address"


class InvalidSignature(AuthenticationError):
    """Signature header missing, malformed or wrong, or its timestamp outside the tolerance."""

    code = "invalid_signature"


class InvalidToken(AuthenticationError):
    """The shared token of an unsigned provider is missing or wrong."""

    code = "invalid_token"


class InvalidPayload(AdapterError):
    """Authenticated, but not JSON or not the provider's shape. `path` is a JSON path into the
    body (`$.data.object.amount`); the raw body goes to quarantine for `gateway reprocess`."""

    code = "invalid_payload"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{reason} - at `{path}`")
        self.path = path
        self.reason = reason

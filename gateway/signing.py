"""Standard Webhooks signatures on what we send (CONTRACT.md 4).

`webhook-signature: v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`,
the key being the base64-decoded part of the subscriber's `whsec_` secret after the prefix. With
several secrets (a rotation) there is one signature per secret, space-separated, and a verifier
accepts the request when any one matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from adapters.source import Secret

__all__ = ["SigningKeys", "decode_whsec", "sign_v1"]

WHSEC_PREFIX = "whsec_"


def decode_whsec(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError (naming no part of it) otherwise."""
    if not secret.startswith(WHSEC_PREFIX):
        raise ValueError("a subscriber secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(WHSEC_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("the part after whsec_ is not valid base64") from None


class SigningKeys:
    """A subscriber's decoded keys, decoded once at start rather than on every attempt."""

    __slots__ = ("_keys",)

    def __init__(self, secrets: Sequence[Secret]) -> None:
        self._keys = tuple(decode_whsec(secret.reveal()) for secret in secrets)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:
        return f"SigningKeys({len(self._keys)} keys)"

    def sign(self, message_id: str, timestamp: int, body: bytes) -> str | None:
        """The `webhook-signature` value, or None for a subscriber without secrets."""
        if not self._keys:
            return None
        return sign_v1(message_id, timestamp, body, self._keys)


def sign_v1(message_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]) -> str:
    """One `v1,<base64>` per key, space-separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode() for key in keys
    )

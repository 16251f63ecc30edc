"""Standard Webhooks signatures on what we send (docs/reference/delivery.md).

Both schemes sign `"<webhook-id>.<webhook-timestamp>.<body>"`:
- `v1`: HMAC-SHA256, keyed with the base64-decoded part of a `whsec_` secret after the prefix;
- `v1a`: Ed25519, with a `whsk_` signing key (base64 of the 32-byte seed, or of the 64-byte
  seed-and-public-key form libsodium writes); the subscriber verifies with the `whpk_` public key.
Each secret of a subscriber gives one signature, space-separated in `webhook-signature`, so a
rotation (or a move from v1 to v1a) needs no downtime: a verifier accepts any one that matches.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from adapters.source import Secret

__all__ = ["SigningKeys", "decode_signing_secret", "new_secret", "public_key_of"]

WHSEC_PREFIX = "whsec_"
WHSK_PREFIX = "whsk_"
WHPK_PREFIX = "whpk_"
_SEED_BYTES = 32


def _base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"the part after {what} is not valid base64") from None


def _ed25519_key(encoded: str) -> Ed25519PrivateKey:
    raw = _base64(encoded, WHSK_PREFIX)
    if len(raw) not in (_SEED_BYTES, 2 * _SEED_BYTES):
        raise ValueError("a whsk_ key is 32 bytes (the seed) or 64 (seed and public key)")
    key = Ed25519PrivateKey.from_private_bytes(raw[:_SEED_BYTES])
    if len(raw) == 2 * _SEED_BYTES and raw[_SEED_BYTES:] != _public_bytes(key):
        raise ValueError("the public half of the whsk_ key does not belong to its seed")
    return key


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def decode_signing_secret(secret: str) -> bytes | Ed25519PrivateKey:
    """The key of a `whsec_` (HMAC) or `whsk_` (Ed25519) secret; ValueError naming no part of it."""
    if secret.startswith(WHSEC_PREFIX):
        return _base64(secret[len(WHSEC_PREFIX) :], WHSEC_PREFIX)
    if secret.startswith(WHSK_PREFIX):
        return _ed25519_key(secret[len(WHSK_PREFIX) :])
    raise ValueError("a subscriber secret starts with whsec_ (v1) or whsk_ (v1a)")


def public_key_of(secret: str) -> str:
    """The `whpk_` public key to give the subscriber of a `whsk_` signing key."""
    key = _ed25519_key(secret.removeprefix(WHSK_PREFIX))
    return WHPK_PREFIX + base64.b64encode(_public_bytes(key)).decode()


def new_secret(kind: str) -> str:
    """A fresh random subscriber secret: `whsec_` and 32 random bytes (v1), or `whsk_` and an
    Ed25519 seed (v1a)."""
    if kind not in ("whsec", "whsk"):
        raise ValueError("a secret is whsec (v1) or whsk (v1a)")
    return f"{kind}_" + base64.b64encode(secrets.token_bytes(_SEED_BYTES)).decode()


class SigningKeys:
    """A subscriber's keys, decoded once at start rather than on every attempt."""

    __slots__ = ("_keys",)

    def __init__(self, secrets: Sequence[Secret]) -> None:
        self._keys = tuple(decode_signing_secret(secret.reveal()) for secret in secrets)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:
        return f"SigningKeys({len(self._keys)} keys)"

    def sign(self, message_id: str, timestamp: int, body: bytes) -> str | None:
        """The `webhook-signature` value, or None for a subscriber without secrets."""
        if not self._keys:
            return None
        signed = f"{message_id}.{timestamp}.".encode() + body
        signatures = []
        for key in self._keys:
            if isinstance(key, bytes):
                digest = hmac.digest(key, signed, hashlib.sha256)
                signatures.append("v1," + base64.b64encode(digest).decode())
            else:
                signatures.append("v1a," + base64.b64encode(key.sign(signed)).decode())
        return " ".join(signatures)

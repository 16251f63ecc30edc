"""HMAC-SHA256 signature checks shared by the signed providers.

Short on purpose: this is the code an auditor reads. Digests are compared as bytes with
`hmac.compare_digest`; a candidate signature that is not hex is malformed, not merely wrong.
Error details say what is wrong with the header's form, never what it contains.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime

from adapters.errors import InvalidSignature
from adapters.source import Secret
from schemas.timestamps import TimestampError, parse_timestamp

__all__ = [
    "check_timestamp",
    "hmac_sha256",
    "parse_hex_digest",
    "parse_timestamped_header",
    "require_secrets",
    "verify_hmac_sha256",
    "verify_timestamped_hmac",
]

_SHA256_HEX_LENGTH = 64


def hmac_sha256(key: str, message: bytes) -> bytes:
    """HMAC-SHA256 of `message`, keyed with `key` as UTF-8 (how every provider here keys it)."""
    return hmac.digest(key.encode(), message, hashlib.sha256)


def parse_hex_digest(candidate: str, header: str) -> bytes:
    """A SHA-256 digest from its hex spelling (either case), or InvalidSignature if malformed."""
    if len(candidate) != _SHA256_HEX_LENGTH:
        raise InvalidSignature(f"malformed {header} header: not a SHA-256 hex digest")
    try:
        return bytes.fromhex(candidate)
    except ValueError:
        raise InvalidSignature(f"malformed {header} header: not a SHA-256 hex digest") from None


def require_secrets(secrets: tuple[Secret, ...]) -> tuple[Secret, ...]:
    """The source's secrets; a signed source without one cannot verify anything."""
    if not secrets:
        raise InvalidSignature("the source has no secret to verify signatures with")
    return secrets


def verify_hmac_sha256(
    message: bytes, candidates: Iterable[bytes], secrets: tuple[Secret, ...]
) -> None:
    """Pass when any candidate digest equals HMAC-SHA256(secret, message) for any secret.

    Every pair is compared in constant time; which secret matched is not observable beyond
    the number of secrets, which is not a secret.
    """
    expected = [hmac_sha256(secret.reveal(), message) for secret in require_secrets(secrets)]
    matched = False
    for candidate in candidates:
        for digest in expected:
            matched |= hmac.compare_digest(candidate, digest)
    if not matched:
        raise InvalidSignature("no signature matches the body with any of the source's secrets")


def check_timestamp(signed_time: str, now: datetime, tolerance_seconds: int) -> None:
    """The signed timestamp must lie within `tolerance_seconds` of `now`, in both directions.

    Old timestamps are replays; timestamps from the future are replays prepared in advance.
    """
    try:
        when = parse_timestamp(signed_time)
    except TimestampError:
        raise InvalidSignature("malformed signature timestamp") from None
    skew = (now - when).total_seconds()
    if skew > tolerance_seconds:
        raise InvalidSignature(f"signature timestamp is older than {tolerance_seconds} s")
    if -skew > tolerance_seconds:
        raise InvalidSignature(f"signature timestamp is more than {tolerance_seconds} s ahead")


def parse_timestamped_header(
    header: str, name: str, separator: str, signature_keys: tuple[str, ...]
) -> tuple[str, list[bytes]]:
    """`t=<time><sep><key>=<hex>[<sep><key>=<hex>...]` -> (the time exactly as sent, digests).

    Stripe's form (`t=...,v1=...`) and Finexer's (`t=...;s=...`). Parts with other keys are
    ignored, as Stripe ignores `v0`; the first `t` counts.
    """
    signed_at: str | None = None
    candidates: list[bytes] = []
    for item in header.split(separator):
        key, equals, value = item.strip().partition("=")
        if not equals:
            raise InvalidSignature(f"malformed {name} header: expected key=value parts")
        if key == "t" and signed_at is None:
            signed_at = value
        elif key in signature_keys:
            candidates.append(parse_hex_digest(value, name))
    if not signed_at:
        raise InvalidSignature(f"malformed {name} header: no timestamp t=")
    if not candidates:
        raise InvalidSignature(f"malformed {name} header: no {'= or '.join(signature_keys)}=")
    return signed_at, candidates


def verify_timestamped_hmac(
    signed_at: str,
    candidates: Iterable[bytes],
    body: bytes,
    secrets: tuple[Secret, ...],
    now: datetime,
    tolerance_seconds: int,
) -> None:
    """The signed time within tolerance, and a candidate = HMAC(secret, "<time>." + body)."""
    require_secrets(secrets)
    check_timestamp(signed_at, now, tolerance_seconds)
    verify_hmac_sha256(signed_at.encode() + b"." + body, candidates, secrets)

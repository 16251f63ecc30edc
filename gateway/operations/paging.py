"""Pages of a list: the limit's bounds and the opaque cursor (docs/reference/admin.md).

A cursor is the sort key of the last item of a page (for events `(received_at, id)`), in
URL-safe base64 of JSON: the next page starts strictly after it, so a walk never repeats or
skips an item, whatever arrives meanwhile. Floats survive JSON exactly (shortest repr).
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

import msgspec

from gateway.operations.errors import InvalidRequest

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "check_limit", "decode_cursor", "encode_cursor"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

K = TypeVar("K")


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit: {limit} is outside 1-{MAX_LIMIT}")
    return limit


def encode_cursor(key: tuple[float, str] | tuple[float, int]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def decode_cursor(cursor: str, key_type: type[K]) -> K:
    """The sort key a cursor holds, as `key_type`; InvalidRequest for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=key_type)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidRequest("cursor: malformed (give back a next_cursor as it was)") from None

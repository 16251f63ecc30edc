"""Times as operators give them (ISO 8601 or unix seconds) and as answers carry them (RFC 3339
UTC); the store keeps unix seconds."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from gateway.operations.errors import InvalidRequest

__all__ = ["parse_time", "rfc3339"]


def rfc3339(timestamp: float) -> str:
    """`2026-11-29T20:48:50.123456Z`: UTC, with `Z`."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def parse_time(name: str, text: str) -> float:
    """Unix seconds from `text`: a number of seconds, or an ISO 8601 time (a time without an
    offset is UTC); InvalidRequest naming the parameter otherwise."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise InvalidRequest(f"{name}: {text!r} is not a finite number of seconds")
        return seconds
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidRequest(f"{name}: {text!r} is neither ISO 8601 nor unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()

"""Times as operators give them (ISO 8601 or unix seconds) and as answers and logs carry them
(RFC 3339 UTC); the store keeps unix seconds. Neutral: the dispatcher, the operations and the
admin shells all use it, and it needs none of them."""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["rfc3339", "unix_seconds"]


def rfc3339(timestamp: float) -> str:
    """`2026-11-29T20:48:50.123456Z`: UTC, with `Z`."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def unix_seconds(text: str) -> float:
    """Unix seconds from `text`: a number of seconds, or an ISO 8601 time (a time without an
    offset is UTC); ValueError saying why otherwise (the caller names the parameter)."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"{text!r} is not a finite number of seconds")
        return seconds
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO 8601 nor unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()

"""Provider times into UTC.

Providers write times as ISO 8601 with an offset (FinAegis), with `Z` and nanoseconds (FinchPay)
or as unix seconds (FinFusion). The canonical event carries them as UTC datetimes, which msgspec
writes as RFC 3339 with `Z` and at most microseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

__all__ = ["TimestampError", "parse_timestamp", "utc_from_unix"]

# 0001-01-01 .. 9999-12-31: what datetime can hold. Anything else is not a time but a mistake.
_MIN_UNIX = -62135596800
_MAX_UNIX = 253402300799
_MAX_TEXT = 64


class TimestampError(ValueError):
    """A value that is not a time we can place in UTC."""


def utc_from_unix(seconds: int | float | Decimal) -> datetime:
    """A UTC datetime from unix seconds (fractions kept to the microsecond)."""
    if isinstance(seconds, bool) or not _MIN_UNIX <= seconds <= _MAX_UNIX:
        raise TimestampError("unix time out of range")
    whole = int(seconds)
    micros = int((Decimal(str(seconds)) - whole) * 1_000_000)
    return datetime.fromtimestamp(whole, UTC).replace(microsecond=micros)


def parse_timestamp(value: str | int | Decimal) -> datetime:
    """A UTC datetime from ISO 8601 text or unix seconds.

    Text without an offset is taken as UTC: a provider that leaves the zone out means its own
    servers' clock, and every provider here documents UTC. Digits past the microsecond are
    truncated, not rounded, so a time never moves into the next second.
    """
    if not isinstance(value, str):
        return utc_from_unix(value)
    text = value.strip()
    if text.isdigit() or (text.startswith("-") and text[1:].isdigit()):
        return utc_from_unix(int(text))
    if len(text) > _MAX_TEXT:
        raise TimestampError("not an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as error:
        raise TimestampError(f"not an ISO 8601 time: {text[:32]!r}") from error
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as error:
        raise TimestampError("time out of range once moved to UTC") from error

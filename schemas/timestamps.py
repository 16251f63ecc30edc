"""Provider times into UTC.

Providers write times as ISO 8601 with an offset (FinAegis), with `Z` and nanoseconds (FinchPay)
or as unix seconds (FinFusion). The canonical event carries them as UTC datetimes, which msgspec
writes as RFC 3339 with `Z` and at most microseconds.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

__all__ = ["TimestampError", "parse_timestamp", "utc_from_unix"]

# 0001-01-01 .. 9999-12-31: what datetime can hold. Anything else is not a time but a mistake.
_MIN_UNIX = -62135596800
_MAX_UNIX = 253402300799
_MAX_TEXT = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ASCII digits only (str.isdigit also admits "²"), and no more than a unix time can have.
_UNIX_TEXT = re.compile(r"-?[0-9]{1,12}(?:\.[0-9]{1,9})?")


class TimestampError(ValueError):
    """A value that is not a time we can place in UTC."""


def utc_from_unix(seconds: int | float | Decimal) -> datetime:
    """A UTC datetime from unix seconds; fractions are floored to the microsecond."""
    if isinstance(seconds, bool):
        raise TimestampError("a boolean is not a unix time")
    if isinstance(seconds, Decimal) and not seconds.is_finite():
        raise TimestampError("unix time is not a finite number")
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise TimestampError("unix time is not a finite number")
    if not _MIN_UNIX <= seconds <= _MAX_UNIX:
        raise TimestampError("unix time out of range")
    if isinstance(seconds, int):
        return _EPOCH + timedelta(seconds=seconds)
    # repr of a float is the shortest text that reads back as it: 1.1 stays 1.1, not 1.0999...
    exact = seconds if isinstance(seconds, Decimal) else Decimal(repr(seconds))
    whole = int(exact.to_integral_value(ROUND_FLOOR))
    micros = int(((exact - whole) * 1_000_000).to_integral_value(ROUND_FLOOR))
    return _EPOCH + timedelta(seconds=whole, microseconds=micros)


def parse_timestamp(value: str | int | Decimal) -> datetime:
    """A UTC datetime from ISO 8601 text or unix seconds.

    Text without an offset is taken as UTC: a provider that leaves the zone out means its own
    servers' clock, and every provider here documents UTC. Digits past the microsecond are
    truncated, not rounded, so a time never moves into the next second.
    """
    if not isinstance(value, str):
        return utc_from_unix(value)
    text = value.strip()
    if _UNIX_TEXT.fullmatch(text):
        return utc_from_unix(Decimal(text) if "." in text else int(text))
    if len(text) > _MAX_TEXT:
        raise TimestampError("not an ISO 8601 time")
    if not text.isascii():
        raise TimestampError("not an ISO 8601 time: non-ASCII characters")
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

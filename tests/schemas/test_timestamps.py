"""Provider times into UTC (docs/reference/event.md: `time` is RFC 3339, UTC, to the microsecond).

ISO 8601 with any offset, `Z` with nanoseconds (FinchPay), unix seconds (FinFusion), and text
without a zone (taken as UTC). Anything else is a TimestampError, never another exception.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.timestamps import TimestampError, parse_timestamp, utc_from_unix

PROPERTY = settings(max_examples=200, database=None, derandomize=True)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-14T10:30:00+00:00", utc(2025, 1, 14, 10, 30)),
        ("2025-01-14T10:30:00Z", utc(2025, 1, 14, 10, 30)),
        ("2025-01-14T12:30:00+02:00", utc(2025, 1, 14, 10, 30)),
        ("2025-01-14T05:00:00-05:30", utc(2025, 1, 14, 10, 30)),
        ("2025-01-01T01:00:00+02:00", utc(2024, 12, 31, 23, 0)),
        ("2020-01-30T12:44:55Z", utc(2020, 1, 30, 12, 44, 55)),
        ("2025-01-14 10:30:00+00:00", utc(2025, 1, 14, 10, 30)),
        ("  2025-01-14T10:30:00Z\n", utc(2025, 1, 14, 10, 30)),
    ],
)
def test_iso_time_with_an_offset_is_moved_to_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "microsecond"),
    [
        ("2023-10-11T10:14:14.491786009Z", 491786),
        ("2023-10-11T10:14:14.4917869Z", 491786),
        ("2023-10-11T10:14:14.999999999Z", 999999),
        ("2023-10-11T10:14:14.1Z", 100000),
        ("2023-10-11T10:14:14.000000999+00:00", 0),
    ],
)
def test_nanoseconds_are_truncated_to_microseconds(text: str, microsecond: int) -> None:
    parsed = parse_timestamp(text)
    # Truncated, never rounded: the time stays in the second the provider wrote.
    assert parsed == utc(2023, 10, 11, 10, 14, 14).replace(microsecond=microsecond)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1767323045, utc(2026, 1, 2, 3, 4, 5)),
        ("1767323045", utc(2026, 1, 2, 3, 4, 5)),
        (0, EPOCH),
        ("0", EPOCH),
        (-1, utc(1969, 12, 31, 23, 59, 59)),
        ("-86400", utc(1969, 12, 31)),
        (Decimal("1767323045.25"), utc(2026, 1, 2, 3, 4, 5).replace(microsecond=250000)),
        ("1767323045.5", utc(2026, 1, 2, 3, 4, 5).replace(microsecond=500000)),
        (1.5, utc(1970, 1, 1, 0, 0, 1).replace(microsecond=500000)),
        (Decimal("-1.5"), utc(1969, 12, 31, 23, 59, 58).replace(microsecond=500000)),
        (-62135596800, utc(1, 1, 1)),
        (253402300799, utc(9999, 12, 31, 23, 59, 59)),
    ],
)
def test_unix_seconds_are_utc(value: int | str | Decimal | float, expected: datetime) -> None:
    assert parse_timestamp(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-14T10:30:00", utc(2025, 1, 14, 10, 30)),
        ("2025-01-14T10:30:00.123456", utc(2025, 1, 14, 10, 30, 0, 123456)),
        ("2025-01-14", utc(2025, 1, 14)),
    ],
)
def test_time_without_a_zone_is_taken_as_utc(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "yesterday",
        "2025-13-01T00:00:00Z",
        "2025-02-30T00:00:00Z",
        "2025-01-14T25:00:00Z",
        "2025-01-14T10:30:00+25:00",
        "14/01/2025",
        "2025-01-14T10:30:00Z" + " " * 60 + "x",
        "x" * 10_000,
        "1e9",
        "0x10",
        "²",  # a digit to str.isdigit, not to int()
        "1767323²45",
        "\u0661\u0667\u0666\u0667x",  # Arabic-Indic digits
        "9" * 5000,  # beyond Python's int-from-text digit limit
        "-" + "9" * 5000,
    ],
    ids=lambda value: repr(value)[:40],
)
def test_garbage_is_a_timestamp_error(value: str) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(value)


@pytest.mark.parametrize(
    "value",
    [
        253402300800,
        -62135596801,
        10**20,
        -(10**20),
        "253402300800",
        "99999999999999999999",
        "10000-01-01T00:00:00Z",
        "0000-12-31T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        Decimal("1e20"),
    ],
    ids=repr,
)
def test_out_of_range_is_a_timestamp_error(value: int | str | Decimal) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(value)


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_not_unix_time(value: bool) -> None:
    with pytest.raises(TimestampError):
        utc_from_unix(value)


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), float("nan")], ids=repr)
def test_a_non_finite_unix_time_is_a_timestamp_error(value: Decimal | float) -> None:
    with pytest.raises(TimestampError):
        parse_timestamp(value)  # type: ignore[arg-type]


# Round trips. Years 2..9998 keep every offset's UTC equivalent inside what datetime can hold.

AWARE = st.datetimes(
    min_value=datetime(2, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.sampled_from(
        [
            UTC,
            timezone(timedelta(hours=2)),
            timezone(timedelta(hours=-5, minutes=-30)),
            timezone(timedelta(hours=14)),
            timezone(timedelta(hours=-12)),
        ]
    ),
)
UTC_TIMES = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
).map(lambda naive: naive.replace(tzinfo=UTC))


@PROPERTY
@given(when=AWARE)
def test_iso_text_round_trips_to_the_same_instant_in_utc(when: datetime) -> None:
    parsed = parse_timestamp(when.isoformat())
    assert parsed == when
    assert parsed.utcoffset() == timedelta(0)
    assert parse_timestamp(when.astimezone(UTC).isoformat().replace("+00:00", "Z")) == when


@PROPERTY
@given(when=UTC_TIMES)
def test_naive_iso_text_round_trips_as_utc(when: datetime) -> None:
    assert parse_timestamp(when.replace(tzinfo=None).isoformat()) == when


@PROPERTY
@given(when=UTC_TIMES)
def test_whole_unix_seconds_round_trip(when: datetime) -> None:
    whole = when.replace(microsecond=0)
    seconds = (whole - EPOCH) // timedelta(seconds=1)
    assert parse_timestamp(seconds) == whole
    assert parse_timestamp(str(seconds)) == whole


@PROPERTY
@given(when=UTC_TIMES)
@example(when=utc(1969, 12, 31, 23, 59, 58).replace(microsecond=500000))
def test_fractional_unix_seconds_round_trip_to_the_microsecond(when: datetime) -> None:
    delta = when - EPOCH
    seconds = Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 10**6
    assert parse_timestamp(seconds) == when


@PROPERTY
@given(text=st.text(max_size=80))
def test_any_text_is_a_time_or_a_timestamp_error(text: str) -> None:
    try:
        parsed = parse_timestamp(text)
    except TimestampError:
        return
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)

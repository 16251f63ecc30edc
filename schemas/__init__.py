"""The canonical model: the event envelope, money, times and the type taxonomy. No I/O, and no
knowledge of any provider."""

from schemas.event import (
    Account,
    CanonicalEvent,
    EventData,
    Verification,
    canonical_event_id,
    decode_event,
    encode_event,
)
from schemas.money import Money, MoneyError, money_from_major, money_from_minor
from schemas.taxonomy import UNMAPPED, EventKind, canonical_status, is_canonical_type, kind_of
from schemas.timestamps import TimestampError, parse_timestamp

__all__ = [
    "UNMAPPED",
    "Account",
    "CanonicalEvent",
    "EventData",
    "EventKind",
    "Money",
    "MoneyError",
    "TimestampError",
    "Verification",
    "canonical_event_id",
    "canonical_status",
    "decode_event",
    "encode_event",
    "is_canonical_type",
    "kind_of",
    "money_from_major",
    "money_from_minor",
    "parse_timestamp",
]

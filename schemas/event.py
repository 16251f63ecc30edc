"""The canonical event: a CloudEvents 1.0 envelope in structured JSON form.

Every provider's webhook becomes one of these. The Structs are the schema: decoding validates
them, and `schemas/canonical-event.schema.json` is generated from them (`python -m schemas`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.money import Money
from schemas.taxonomy import EventKind

__all__ = [
    "Account",
    "CanonicalEvent",
    "EventData",
    "Verification",
    "canonical_event_id",
    "decode_event",
    "encode_event",
]

# How the request that carried the event was authenticated (docs/reference/ingress.md): the
# provider's own signature, a shared token (with or without an address allow-list), the address
# alone, or nothing.
Verification = Literal["signature", "token", "allowlist", "none"]

EventId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^evt_[0-9A-HJKMNP-TV-Z]{26}$",
        description="evt_ + 26 Crockford base32 characters of SHA-256(source NUL idempotency key).",
    ),
]
EventType = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z][a-z0-9_]*\.[^\x00-\x1f\x7f]+$",
        max_length=256,
        description="`<kind>.<action>`, or `<adapter>.<provider type>` when unmapped.",
    ),
]
ExtensionName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]+$", max_length=64)]
# The CloudEvents Distributed Tracing extension: the W3C Trace Context of the webhook request's
# span, so that a delivery sent later (by another process or node) joins the same trace.
W3CTraceParent = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        description=(
            "W3C traceparent of the span that received the webhook (CloudEvents Distributed "
            "Tracing extension)."
        ),
    ),
]
W3CTraceState = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=512,
        description="W3C tracestate that came with the traceparent, when there was one.",
    ),
]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
# Two statuses, because consumers need one word per fact and operators the provider's own:
# `status` is derived from the type alone (schemas/taxonomy.py, `canonical_status`), so it is the
# same whichever provider reported the fact; `provider_status` is kept for display and debugging.
CanonicalStatus = Annotated[
    str | None,
    msgspec.Meta(
        description=(
            "The action of the canonical type (`transfer.succeeded` -> `succeeded`), the same "
            "whichever provider reported the fact; null for types that report no new state of "
            "their subject (`account.updated`, `account.balance_updated`, `account.credited`, "
            "`account.debited`, `card.transaction`, `workflow.step_completed`, `system.*`) and "
            "for unmapped events."
        )
    ),
]
ProviderStatus = Annotated[
    str | None,
    msgspec.Meta(
        description=(
            "The provider's own status string, verbatim, where its payload has one; for display "
            "and debugging, not to switch on."
        )
    ),
]


class Account(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The account an event concerns, as far as the provider names it."""

    number: str | None
    name: str | None
    iban: str | None


class EventData(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The normalized facts of an event, the same fields whichever provider reported it.

    Fields the provider does not give are null, never absent, so a consumer can rely on the shape.
    """

    kind: EventKind
    id: str | None
    status: CanonicalStatus
    provider_status: ProviderStatus
    amount: Money | None
    counter_amount: Money | None
    account: Account | None
    balance: Money | None
    reference: str | None
    occurred_at: datetime | None
    # The provider's body exactly as received (the bytes, not a re-encoding): PHP's `\/` escapes,
    # key order and number spelling survive, so a consumer can re-check anything we normalized.
    provider_payload: msgspec.Raw


class CanonicalEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A CloudEvents 1.0 event with finrelay's extension attributes.

    Fields are declared in the order they are written (specversion first, data last), which is
    the order CloudEvents examples use and the one a person reading a log expects.
    `subject` and `providerid` are optional CloudEvents attributes: omitted when unknown, never
    null, because the CloudEvents spec gives null no meaning for attributes. So are
    `traceparent` and `tracestate` (the Distributed Tracing extension): the ingress sets them
    (adapters never see tracing), and they are absent when tracing is disabled.
    """

    specversion: Literal["1.0"] = "1.0"
    id: EventId
    source: NonEmpty
    type: EventType
    subject: NonEmpty | msgspec.UnsetType = msgspec.UNSET
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    provider: ExtensionName
    providertype: NonEmpty
    providerid: NonEmpty | msgspec.UnsetType = msgspec.UNSET
    verification: Verification
    traceparent: W3CTraceParent | msgspec.UnsetType = msgspec.UNSET
    tracestate: W3CTraceState | msgspec.UnsetType = msgspec.UNSET
    data: EventData


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 characters per 10 bits: 13 lookups make the 26 characters. (base64.b32encode gives
# the same digits in RFC 4648's alphabet, but is pure Python before 3.12 and twice as slow.)
_PAIRS = [_CROCKFORD[i >> 5] + _CROCKFORD[i & 31] for i in range(1024)]
_SHIFTS = tuple(range(120, -1, -10))


def canonical_event_id(source: str, idempotency_key: str) -> str:
    """The event id: the same provider event always gets the same id.

    `evt_` + the first 16 bytes of SHA-256(source name, NUL, the adapter's idempotency key) in
    base32 (RFC 4648 bit order, unpadded) with Crockford's alphabet: 26 characters. The source
    name is part of it so that two provider accounts never collide; NUL cannot occur in a
    source name.
    """
    digest = hashlib.sha256(f"{source}\0{idempotency_key}".encode()).digest()
    bits = int.from_bytes(digest[:16], "big") << 2  # 130 bits: 26 characters of 5
    return "evt_" + "".join([_PAIRS[(bits >> shift) & 1023] for shift in _SHIFTS])


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CanonicalEvent)


def encode_event(event: CanonicalEvent) -> bytes:
    """The event's JSON bytes: encode once, then store and send these same bytes everywhere."""
    return _encoder.encode(event)


def decode_event(payload: bytes) -> CanonicalEvent:
    """Decode and validate an encoded canonical event."""
    return _decoder.decode(payload)

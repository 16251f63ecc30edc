"""FinFusion: payments, banking and cards, with Stripe's event shape and signature scheme.

Seed 002. The API is a copy of Stripe's, and so is the signature: `x-finfusion-signature:
t=<unix>,v1=<hex>[,v1=<hex>]`, HMAC-SHA256 keyed with the whole `whsec_...` string over
`<t>.<raw body>`. Stripe's own `Webhook.construct_event` accepts what we accept (tested).
Amounts are integer minor units; currencies come lower-case, as Stripe writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec

from adapters.base import Adapter, Facts, account_event_account, map_type
from adapters.decoding import (
    decode_payload,
    identifier,
    minor_money,
    timestamp,
)
from adapters.errors import InvalidSignature
from adapters.request import InboundRequest
from adapters.signatures import (
    hmac_sha256,
    parse_timestamped_header,
    verify_timestamped_hmac,
)
from adapters.source import SourceSettings

__all__ = ["ADAPTER", "TYPE_TABLE", "check_finfusion_signature", "sign_finfusion"]

SIGNATURE_HEADER = "x-finfusion-signature"

# The twelve types of the seed; FinFusion already speaks the canonical vocabulary.
TYPE_TABLE: Mapping[str, str] = {
    name: name
    for name in (
        "payment.succeeded",
        "payment.failed",
        "payment.refunded",
        "payment.disputed",
        "account.created",
        "account.updated",
        "transfer.succeeded",
        "transfer.failed",
        "card.created",
        "card.activated",
        "card.blocked",
        "card.transaction",
    )
}


class FinFusionObject(msgspec.Struct, frozen=True):
    """`data.object`: the payment, account, transfer or card the event is about."""

    id: str | int | None = None
    amount: int | None = None
    currency: str | None = None
    status: str | None = None
    reference: str | None = None
    balance: int | None = None
    account_number: str | None = None
    account_name: str | None = None
    name: str | None = None
    iban: str | None = None


class FinFusionData(msgspec.Struct, frozen=True):
    object: FinFusionObject = msgspec.field(default_factory=FinFusionObject)


class FinFusionEvent(msgspec.Struct, frozen=True):
    id: str
    type: str
    created: int | None = None
    data: FinFusionData = msgspec.field(default_factory=FinFusionData)


_decoder = msgspec.json.Decoder(FinFusionEvent)


def check_finfusion_signature(
    request: InboundRequest, settings: SourceSettings, now: datetime
) -> None:
    """Stripe's scheme: any `v1` matching any secret, and `t` within the tolerance both ways."""
    header = request.headers.get(SIGNATURE_HEADER)
    if header is None:
        raise InvalidSignature("missing x-finfusion-signature header")
    signed_at, candidates = parse_timestamped_header(header, SIGNATURE_HEADER, ",", ("v1",))
    if not (signed_at.isascii() and signed_at.isdigit()):
        raise InvalidSignature("malformed x-finfusion-signature header: t= is not unix seconds")
    verify_timestamped_hmac(
        signed_at, candidates, request.body, settings.secrets, now, settings.tolerance_seconds
    )


def sign_finfusion(body: bytes, secret: str, now: datetime) -> dict[str, str]:
    """The header FinFusion sends with `body`."""
    signed_at = str(int(now.timestamp()))
    digest = hmac_sha256(secret, signed_at.encode() + b"." + body).hex()
    return {SIGNATURE_HEADER: f"t={signed_at},v1={digest}"}


def read_finfusion(
    body: bytes, headers: Mapping[str, str], settings: SourceSettings, received_at: datetime
) -> Facts:
    event = decode_payload(_decoder, body)
    obj = event.data.object
    canonical_type = map_type(event.type, TYPE_TABLE)
    account = account_event_account(
        canonical_type, obj.account_number, obj.account_name or obj.name, obj.iban
    )
    object_id = identifier(obj.id)
    return Facts(
        providertype=event.type,
        canonical_type=canonical_type,
        idempotency_key=event.id,
        occurred_at=None if event.created is None else timestamp(event.created, "$.created"),
        subject=object_id,
        providerid=event.id,
        object_id=object_id,
        provider_status=obj.status,
        amount=minor_money(obj.amount, obj.currency, settings, "$.data.object.amount"),
        account=account,
        balance=minor_money(obj.balance, obj.currency, settings, "$.data.object.balance"),
        reference=obj.reference,
    )


ADAPTER = Adapter(
    name="finfusion",
    read_facts=read_finfusion,
    check_signature=check_finfusion_signature,
    sign=sign_finfusion,
    signature_headers=(SIGNATURE_HEADER,),
)

"""Finexer: UK open banking (consents, connected bank accounts, bank-feed transactions, payments).

Seed 001 shows the envelope; the signature is known only from a third-party receiver written
against their Signatures page, so we accept every spelling it admits: `fx-signature:
t=<time>;s=<hex>`, with `;` or `,` between the parts, `s=` or `v1=`, and `t` in ISO 8601 or
unix seconds. The HMAC covers `<t>.<raw body>` with `t` exactly as it appears in the header.
The header name is the source's `signature_header`; `x-finexer-signature` is tried too.
Amounts are in major units.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

import msgspec

from adapters.base import Adapter, Facts, account_event_account, map_type
from adapters.decoding import decode_payload, identifier, major_money, timestamp
from adapters.errors import InvalidSignature
from adapters.request import InboundRequest
from adapters.signatures import (
    hmac_sha256,
    parse_timestamped_header,
    verify_timestamped_hmac,
)
from adapters.source import SourceSettings

__all__ = ["ADAPTER", "TYPE_TABLE", "check_finexer_signature", "sign_finexer"]

FALLBACK_SIGNATURE_HEADER = "x-finexer-signature"

# docs/reference/types.md, Finexer table: several spellings of one fact map to one type.
TYPE_TABLE: Mapping[str, str] = {
    "consent.created": "consent.created",
    "consent.authorised": "consent.authorized",
    "consent.authorized": "consent.authorized",
    "consent.accepted": "consent.authorized",
    "consent.declined": "consent.declined",
    "consent.rejected": "consent.declined",
    "consent.revoked": "consent.revoked",
    "consent.canceled": "consent.revoked",
    "consent.cancelled": "consent.revoked",
    "bank_account.import": "account.connected",
    "bank_account.created": "account.connected",
    "transaction.created": "transaction.created",
    "payment.created": "payment.created",
    "payment.initiated": "payment.created",
    "payment.completed": "payment.succeeded",
    "payment.succeeded": "payment.succeeded",
    "payment.failed": "payment.failed",
}


class FinexerObject(msgspec.Struct, frozen=True):
    """`data.object`: any Finexer API object (consent, bank account, transaction, payment)."""

    id: str | int | None = None
    status: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    balance: Decimal | None = None
    reference: str | None = None
    account_number: str | None = None
    account_name: str | None = None
    name: str | None = None
    iban: str | None = None


class FinexerData(msgspec.Struct, frozen=True):
    object: FinexerObject = msgspec.field(default_factory=FinexerObject)


class FinexerEvent(msgspec.Struct, frozen=True):
    id: str
    type: str
    created_at: str | int | None = None
    data: FinexerData = msgspec.field(default_factory=FinexerData)


_decoder = msgspec.json.Decoder(FinexerEvent)


def check_finexer_signature(
    request: InboundRequest, settings: SourceSettings, now: datetime
) -> None:
    """`t=<time>;s=<hex>` in any admitted spelling; any `s` matching any secret."""
    name = settings.signature_header.lower()
    header = request.headers.get(name)
    if header is None:
        name = FALLBACK_SIGNATURE_HEADER
        header = request.headers.get(name)
    if header is None:
        raise InvalidSignature(f"missing {settings.signature_header.lower()} header")
    separator = ";" if ";" in header else ","
    signed_at, candidates = parse_timestamped_header(header, name, separator, ("s", "v1"))
    verify_timestamped_hmac(
        signed_at, candidates, request.body, settings.secrets, now, settings.tolerance_seconds
    )


def sign_finexer(body: bytes, secret: str, now: datetime) -> dict[str, str]:
    """The header Finexer sends with `body` (ISO 8601 timestamp, `;` separator)."""
    signed_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hmac_sha256(secret, signed_at.encode() + b"." + body).hex()
    return {"fx-signature": f"t={signed_at};s={digest}"}


def read_finexer(
    body: bytes, headers: Mapping[str, str], settings: SourceSettings, received_at: datetime
) -> Facts:
    event = decode_payload(_decoder, body)
    obj = event.data.object
    canonical_type = map_type(event.type, TYPE_TABLE)
    account = account_event_account(
        canonical_type, obj.account_number, obj.account_name or obj.name, obj.iban
    )
    object_id = identifier(obj.id)
    occurred_at = None
    if event.created_at is not None:
        occurred_at = timestamp(event.created_at, "$.created_at")
    return Facts(
        providertype=event.type,
        canonical_type=canonical_type,
        idempotency_key=event.id,
        occurred_at=occurred_at,
        subject=object_id,
        providerid=event.id,
        object_id=object_id,
        provider_status=obj.status,
        amount=major_money(obj.amount, obj.currency, settings, "$.data.object.amount"),
        account=account,
        balance=major_money(obj.balance, obj.currency, settings, "$.data.object.balance"),
        reference=obj.reference,
    )


ADAPTER = Adapter(
    name="finexer",
    read_facts=read_finexer,
    check_signature=check_finexer_signature,
    sign=sign_finexer,
    # The source may name another (`signature_header`): ingress strips that one too.
    signature_headers=("fx-signature", FALLBACK_SIGNATURE_HEADER),
    source_keys=("signature_header",),
)

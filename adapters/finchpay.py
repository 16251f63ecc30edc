"""FinchPay: a crypto on-ramp that posts one webhook per transaction status change.

Seed 003. The body is flat; amounts are decimal strings in major units (fiat or crypto). FinchPay
does not sign its webhooks, and `partner_key` is public, so it proves nothing: a source
authenticates with a token in the URL and/or an address allow-list (adapters/access.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

import msgspec

from adapters.base import Adapter, Facts, map_type
from adapters.decoding import decode_payload, identifier, major_money, timestamp
from adapters.source import SourceSettings

__all__ = ["ADAPTER", "TYPE_TABLE"]

# The status is the event. Older pages list CREATED..ERROR; newer ones add HOLD, EXPIRED and
# REJECTED_BY_ANTI_FRAUD (docs/reference/types.md).
TYPE_TABLE: Mapping[str, str] = {
    "CREATED": "payment.created",
    "RECEIVED": "payment.processing",
    "PROCESSING": "payment.processing",
    "SENDING": "payment.processing",
    "HOLD": "payment.processing",
    "COMPLETE": "payment.succeeded",
    "ERROR": "payment.failed",
    "REJECTED_BY_ANTI_FRAUD": "payment.failed",
    "REFUNDED": "payment.refunded",
    "EXPIRED": "payment.expired",
}


class FinchPayTransaction(msgspec.Struct, frozen=True):
    id: str | int
    status: str
    amount_from: Decimal | None = None
    asset_from: str | None = None
    amount_to: Decimal | None = None
    asset_to: str | None = None
    event_time: str | int | None = None
    external_id: str | None = None


_decoder = msgspec.json.Decoder(FinchPayTransaction)


def read_finchpay(
    body: bytes, headers: Mapping[str, str], settings: SourceSettings, received_at: datetime
) -> Facts:
    transaction = decode_payload(_decoder, body)
    transaction_id = identifier(transaction.id)
    occurred_at = None
    if transaction.event_time is not None:
        occurred_at = timestamp(transaction.event_time, "$.event_time")
    return Facts(
        providertype=transaction.status,
        canonical_type=map_type(transaction.status, TYPE_TABLE),
        # One webhook per status change: the transaction id alone would swallow every update
        # after the first, so the status is part of the key.
        idempotency_key=f"{transaction_id}\0{transaction.status}",
        occurred_at=occurred_at,
        subject=transaction_id,
        object_id=transaction_id,
        # The status is FinchPay's type and its own word too: `COMPLETE` stays `COMPLETE` here.
        provider_status=transaction.status,
        # What the customer sent, whatever the `side`; what they get is the counter amount.
        amount=major_money(
            transaction.amount_from, transaction.asset_from, settings, "$.amount_from"
        ),
        counter_amount=major_money(
            transaction.amount_to, transaction.asset_to, settings, "$.amount_to"
        ),
        reference=transaction.external_id,
    )


ADAPTER = Adapter(name="finchpay", read_facts=read_finchpay)

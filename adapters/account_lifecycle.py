"""The account-lifecycle provider (Prune Payments): `message` / `identifier` / `code` payloads.

Seed 004. Nine event types, each named twice: by `identifier` and by the integer `code`. Either one
alone is enough to map an event (docs/reference/types.md). The payload has no time and no currency:
the time is the receive time, the currency the source's `currency` setting. Amounts are JSON numbers
in major units. No signature exists; sources authenticate with a token and/or an address allow-list
(adapters/access.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

import msgspec

from adapters.base import Adapter, Facts
from adapters.decoding import body_digest, decode_payload, identifier, major_money
from adapters.errors import InvalidPayload
from adapters.source import SourceSettings
from schemas.event import Account

__all__ = ["ADAPTER", "CODE_TABLE", "IDENTIFIER_TABLE"]

IDENTIFIER_TABLE: Mapping[str, str] = {
    "ACCOUNT_CREATED": "account.created",
    "ACCOUNT_REQUEST_APPROVED": "account.request_approved",
    "ACCOUNT_REQUEST_REJECTED": "account.request_rejected",
    "BALANCE_UPDATE": "account.balance_updated",
    "DEPOSIT_BALANCE_UPDATE": "account.balance_updated",
    "TRANSACTION_CONFIRMED": "transfer.succeeded",
    "TRANSACTION_REJECTED": "transfer.failed",
    "ACCOUNT_CREDITED": "account.credited",
    "ACCOUNT_DEBITED": "account.debited",
}

CODE_TABLE: Mapping[int, str] = {
    1143: "account.created",
    2196: "account.request_approved",
    2198: "account.request_rejected",
    3019: "account.balance_updated",
    3020: "account.balance_updated",
    3021: "transfer.succeeded",
    3022: "transfer.failed",
    3023: "account.credited",
    3024: "account.debited",
}


class LifecycleEvent(msgspec.Struct, frozen=True, rename="camel"):
    message: str | None = None
    identifier: str | None = None
    code: int | None = None
    account_number: str | int | None = None
    account_name: str | None = None
    iban: str | None = None
    request_id: str | int | None = None
    transaction_id: str | int | None = None
    transaction_ref: str | int | None = None
    amount: Decimal | None = None
    balance: Decimal | None = None


_decoder = msgspec.json.Decoder(LifecycleEvent)


def read_account_lifecycle(
    body: bytes, headers: Mapping[str, str], settings: SourceSettings, received_at: datetime
) -> Facts:
    event = decode_payload(_decoder, body)
    if event.identifier is None and event.code is None:
        raise InvalidPayload("$.identifier", "neither `identifier` nor `code` names the event")
    canonical_type = None
    if event.identifier is not None:
        canonical_type = IDENTIFIER_TABLE.get(event.identifier)
    if canonical_type is None and event.code is not None:
        canonical_type = CODE_TABLE.get(event.code)
    providertype = event.identifier if event.identifier is not None else str(event.code)

    transaction_id = identifier(event.transaction_id)
    request_id = identifier(event.request_id)
    transaction_ref = identifier(event.transaction_ref)
    account_number = identifier(event.account_number)
    # The provider gives no event id: the event is named by what it is about.
    correlation = transaction_id or request_id or transaction_ref
    key = f"{providertype}\0{correlation}" if correlation else body_digest(body)
    subject = transaction_id or request_id or account_number
    account = None
    if account_number or event.account_name or event.iban:
        account = Account(number=account_number, name=event.account_name, iban=event.iban)
    return Facts(
        providertype=providertype,
        canonical_type=canonical_type,
        idempotency_key=key,
        occurred_at=None,
        subject=subject,
        object_id=subject,
        amount=major_money(event.amount, None, settings, "$.amount"),
        account=account,
        balance=major_money(event.balance, None, settings, "$.balance"),
        reference=transaction_ref,
    )


ADAPTER = Adapter(name="account_lifecycle", read_facts=read_account_lifecycle)

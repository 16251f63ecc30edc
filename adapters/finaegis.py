"""FinAegis: an open-source core-banking platform (accounts, transfers, workflows, system events).

Seed 000. Its code and its website disagree, so we accept both:
- the code (FinAegis/core-banking-prototype-laravel, app/Domain/Webhook/) posts a *flat* body,
  the event's own fields plus `"event"` and `"timestamp"`, signed as
  `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>` with no timestamp, and names
  the delivery in `X-Webhook-Delivery` (reused by every retry);
- the website shows `X-FinAegis-Signature: sha256=<hex>` over `<X-FinAegis-Timestamp>.<body>`,
  `X-FinAegis-Event-Id`, and an *envelope* `{"event_id", "event_type", "created_at", "data"}`
  (or `{"id", "type", "created_at", "data"}` on other pages).
PHP's json_encode writes `/` as `\\/`: the signature covers those bytes, so we never re-encode.
Integer amounts are minor units; strings (and fractions) are major units.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

import msgspec

from adapters.base import Adapter, Facts, map_type
from adapters.decoding import (
    body_digest,
    decode_payload,
    identifier,
    minor_or_major_money,
    timestamp,
)
from adapters.errors import InvalidPayload, InvalidSignature
from adapters.request import InboundRequest
from adapters.signatures import (
    hmac_sha256,
    parse_hex_digest,
    verify_hmac_sha256,
    verify_timestamped_hmac,
)
from adapters.source import SourceSettings
from schemas.event import Account

__all__ = [
    "ADAPTER",
    "OPEN_KINDS",
    "TYPE_TABLE",
    "check_finaegis_signature",
    "sign_finaegis",
    "sign_finaegis_timestamped",
]

TYPE_TABLE: Mapping[str, str] = {
    "account.created": "account.created",
    "account.updated": "account.updated",
    "account.balance_updated": "account.balance_updated",
    "account.frozen": "account.frozen",
    "account.unfrozen": "account.unfrozen",
    "account.closed": "account.closed",
    "transfer.created": "transfer.created",
    "transfer.pending": "transfer.pending",
    "transfer.completed": "transfer.succeeded",
    "transfer.failed": "transfer.failed",
    "transfer.reversed": "transfer.reversed",
    "transfer.expired": "transfer.expired",
    "transaction.created": "transaction.created",
    "transaction.reversed": "transaction.reversed",
}
# workflow.* and system.* keep FinAegis's names, whatever the action.
OPEN_KINDS = frozenset({"workflow", "system"})


class FinAegisFields(msgspec.Struct, frozen=True):
    """The event's own fields: at the top level of a flat body, inside `data` of an envelope."""

    id: str | int | None = None
    uuid: str | int | None = None
    account_uuid: str | int | None = None
    transfer_uuid: str | int | None = None
    workflow_id: str | int | None = None
    amount: int | Decimal | None = None
    balance: int | Decimal | None = None
    currency: str | None = None
    status: str | None = None
    reference: str | None = None
    account_number: str | None = None
    account_name: str | None = None
    name: str | None = None
    iban: str | None = None


class FinAegisBody(FinAegisFields, frozen=True):
    """Any of the three shapes: flat (`event`, `timestamp`), or enveloped (`data`) with
    `event_id`/`event_type` or `id`/`type`."""

    event: str | None = None
    event_type: str | None = None
    type: str | None = None
    event_id: str | int | None = None
    timestamp: str | int | None = None
    created_at: str | int | None = None
    data: FinAegisFields | None = None


_decoder = msgspec.json.Decoder(FinAegisBody)


def _sha256_digest(value: str, header: str) -> bytes:
    # Their code writes `sha256=<hex>`; a bare hex digest is the same claim and accepted too.
    return parse_hex_digest(value.strip().removeprefix("sha256="), header)


def check_finaegis_signature(
    request: InboundRequest, settings: SourceSettings, now: datetime
) -> None:
    """The website's timestamped variant when its header is present, else the code's plain one."""
    headers = request.headers
    timestamped = headers.get("x-finaegis-signature")
    if timestamped is not None:
        signed_at = headers.get("x-finaegis-timestamp")
        if not signed_at:
            raise InvalidSignature("X-FinAegis-Signature without X-FinAegis-Timestamp")
        digest = _sha256_digest(timestamped, "X-FinAegis-Signature")
        verify_timestamped_hmac(
            signed_at, [digest], request.body, settings.secrets, now, settings.tolerance_seconds
        )
        return
    plain = headers.get("x-webhook-signature")
    if plain is None:
        raise InvalidSignature("missing X-Webhook-Signature (or X-FinAegis-Signature) header")
    digest = _sha256_digest(plain, "X-Webhook-Signature")
    verify_hmac_sha256(request.body, [digest], settings.secrets)


def sign_finaegis(body: bytes, secret: str, now: datetime) -> dict[str, str]:
    """The header FinAegis's delivery code sends with `body` (no timestamp is signed)."""
    return {"x-webhook-signature": "sha256=" + hmac_sha256(secret, body).hex()}


def sign_finaegis_timestamped(body: bytes, secret: str, now: datetime) -> dict[str, str]:
    """The headers of the variant on FinAegis's website."""
    signed_at = str(int(now.timestamp()))
    digest = hmac_sha256(secret, signed_at.encode() + b"." + body).hex()
    return {"x-finaegis-timestamp": signed_at, "x-finaegis-signature": f"sha256={digest}"}


def read_finaegis(
    body: bytes, headers: Mapping[str, str], settings: SourceSettings, received_at: datetime
) -> Facts:
    payload = decode_payload(_decoder, body)
    provider_type = (
        payload.event or payload.event_type or payload.type or headers.get("x-webhook-event")
    )
    if not provider_type:
        raise InvalidPayload("$.event", "no event type in `event`, `event_type`, `type` or header")
    enveloped = payload.data is not None
    fields: FinAegisFields = payload.data if payload.data is not None else payload
    # In an envelope the top-level `id` names the event; in a flat body it is the object's own.
    event_id = identifier(payload.event_id) or (identifier(payload.id) if enveloped else None)
    header_event_id = headers.get("x-finaegis-event-id") or None
    delivery_id = headers.get("x-webhook-delivery") or None

    occurred_at = None
    if payload.timestamp is not None:
        occurred_at = timestamp(payload.timestamp, "$.timestamp")
    elif payload.created_at is not None:
        occurred_at = timestamp(payload.created_at, "$.created_at")

    subject = (
        identifier(fields.transfer_uuid)
        or identifier(fields.account_uuid)
        or identifier(fields.workflow_id)
        or identifier(fields.uuid)
        or identifier(fields.id)
    )
    account_number = fields.account_number or identifier(fields.account_uuid)
    account = None
    if account_number is not None:
        account = Account(
            number=account_number, name=fields.account_name or fields.name, iban=fields.iban
        )
    where = "$.data" if enveloped else "$"
    # docs/reference/event.md: `status` of a flat body, `data.status` of an envelope (the object's
    # own), or an envelope's top-level `status` when its `data` has none.
    provider_status = fields.status if fields.status is not None else payload.status
    return Facts(
        providertype=provider_type,
        canonical_type=map_type(provider_type, TYPE_TABLE, OPEN_KINDS),
        # The delivery id is what their retries repeat; an event id where only the website's
        # variant is in use; else the body itself (their code signs no timestamp, so a retry
        # is byte-identical).
        idempotency_key=delivery_id or header_event_id or event_id or body_digest(body),
        occurred_at=occurred_at,
        subject=subject,
        providerid=event_id or header_event_id or delivery_id,
        object_id=subject,
        provider_status=provider_status,
        amount=minor_or_major_money(fields.amount, fields.currency, settings, f"{where}.amount"),
        account=account,
        balance=minor_or_major_money(fields.balance, fields.currency, settings, f"{where}.balance"),
        reference=fields.reference,
    )


ADAPTER = Adapter(
    name="finaegis",
    read_facts=read_finaegis,
    check_signature=check_finaegis_signature,
    sign=sign_finaegis,
    signature_headers=("x-webhook-signature", "x-finaegis-signature"),
)

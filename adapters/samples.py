"""Sample webhooks as each provider would send them, for `gateway sample` and the benchmarks.

Each call makes a new event (fresh ids), so a sample is never taken for a retry of the last one.
A type may be given as the provider spells it (`COMPLETE`, `transfer.completed`) or as its
canonical type (`payment.succeeded`), which picks the provider's first spelling of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

import msgspec

from adapters import account_lifecycle, finaegis, finchpay, finexer, finfusion

__all__ = ["DEFAULT_TYPES", "SampleError", "known_types", "sample_body"]

DEFAULT_TYPES: Mapping[str, str] = {
    "finaegis": "transfer.completed",
    "finexer": "payment.completed",
    "finfusion": "payment.succeeded",
    "finchpay": "COMPLETE",
    "account_lifecycle": "TRANSACTION_CONFIRMED",
}

_TABLES: Mapping[str, Mapping[str, str]] = {
    "finaegis": finaegis.TYPE_TABLE,
    "finexer": finexer.TYPE_TABLE,
    "finfusion": finfusion.TYPE_TABLE,
    "finchpay": finchpay.TYPE_TABLE,
    "account_lifecycle": account_lifecycle.IDENTIFIER_TABLE,
}
# The seed's identifier -> code pairs.
_LIFECYCLE_CODES: Mapping[str, int] = {
    "ACCOUNT_CREATED": 1143,
    "ACCOUNT_REQUEST_APPROVED": 2196,
    "ACCOUNT_REQUEST_REJECTED": 2198,
    "BALANCE_UPDATE": 3019,
    "DEPOSIT_BALANCE_UPDATE": 3020,
    "TRANSACTION_CONFIRMED": 3021,
    "TRANSACTION_REJECTED": 3022,
    "ACCOUNT_CREDITED": 3023,
    "ACCOUNT_DEBITED": 3024,
}


class SampleError(ValueError):
    """No sample can be made for that adapter and type."""


def _short_id() -> str:
    return uuid.uuid4().hex[:16]


def _finaegis(provider_type: str, now: datetime) -> object:
    return {
        "transfer_uuid": str(uuid.uuid4()),
        "account_uuid": str(uuid.uuid4()),
        "amount": 150000,
        "currency": "EUR",
        "reference": f"INV-{_short_id()}",
        "status": provider_type.rpartition(".")[2],
        "event": provider_type,
        "timestamp": now.isoformat(timespec="seconds"),
    }


def _finexer(provider_type: str, now: datetime) -> object:
    return {
        "id": f"evt_{_short_id()}",
        "object": "event",
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "type": provider_type,
        "data": {
            "object": {
                "id": f"obj_{_short_id()}",
                "status": provider_type.rpartition(".")[2],
                "amount": "125.50",
                "currency": "GBP",
                "reference": "Invoice 42",
            }
        },
    }


def _finfusion(provider_type: str, now: datetime) -> object:
    created = int(now.timestamp())
    return {
        "id": f"evt_{_short_id()}",
        "object": "event",
        "type": provider_type,
        "created": created,
        "livemode": False,
        "data": {
            "object": {
                "id": f"obj_{_short_id()}",
                "amount": 1000,
                "currency": "usd",
                "status": provider_type.rpartition(".")[2],
                "created": created,
            }
        },
    }


def _finchpay(provider_type: str, now: datetime) -> object:
    return {
        "id": str(uuid.uuid4()),
        "status": provider_type,
        "partner_key": "6794e41ed645",
        "amount_from": "100",
        "asset_from": "EUR",
        "asset_from_extra": None,
        "amount_to": "109.58",
        "asset_to": "USDT",
        "asset_network_to": "TRC20",
        "asset_to_extra": None,
        "partner_profit_amount": "2.38",
        "partner_profit_currency": "EUR",
        "event_time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "external_id": f"order-{_short_id()}",
        "transaction_hash": uuid.uuid4().hex,
        "payment_method": "card",
        "side": "buy",
    }


def _account_lifecycle(provider_type: str, now: datetime) -> object:
    body: dict[str, object] = {
        "message": provider_type.replace("_", " ").title(),
        "identifier": provider_type,
        "accountNumber": "GB1204550505050568",
        "accountName": "James Roque",
        "amount": 300,
        "transactionId": f"TRX-{_short_id()}",
        "transactionRef": f"XFER-{_short_id()}",
    }
    if provider_type in _LIFECYCLE_CODES:
        body["code"] = _LIFECYCLE_CODES[provider_type]
    return body


_BUILDERS: Mapping[str, Callable[[str, datetime], object]] = {
    "finaegis": _finaegis,
    "finexer": _finexer,
    "finfusion": _finfusion,
    "finchpay": _finchpay,
    "account_lifecycle": _account_lifecycle,
}


def provider_type_for(adapter: str, requested: str | None) -> str:
    """The provider's spelling of `requested` (a provider or canonical type; None: default)."""
    if adapter not in _BUILDERS:
        raise SampleError(f"no adapter named {adapter!r}")
    if requested is None:
        return DEFAULT_TYPES[adapter]
    table = _TABLES[adapter]
    if requested in table:
        return requested
    for provider_type, canonical in table.items():
        if canonical == requested:
            return provider_type
    # Not in the table: still a valid sample, of an event the gateway passes through unmapped.
    return requested


def known_types(adapter: str) -> tuple[str, ...]:
    """The provider types a built-in adapter has a canonical type for (none for another name)."""
    return tuple(_TABLES.get(adapter, ()))


def sample_body(adapter: str, requested_type: str | None, now: datetime) -> bytes:
    """A new sample body for `adapter`, of `requested_type` (default: a typical one)."""
    provider_type = provider_type_for(adapter, requested_type)
    return msgspec.json.encode(_BUILDERS[adapter](provider_type, now))

"""The same real-world fact gets the same canonical type whichever provider reports it.

Every cell of CONTRACT.md section 3, written out here independently of the adapters' own tables.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from adapters.registry import ADAPTERS
from tests.support import NOW, settings_for

# canonical type -> {adapter: [provider spellings]}
CONTRACT_TABLE: dict[str, dict[str, list[str]]] = {
    "account.created": {
        "finaegis": ["account.created"],
        "finfusion": ["account.created"],
        "account_lifecycle": ["ACCOUNT_CREATED", "1143"],
    },
    "account.updated": {"finaegis": ["account.updated"], "finfusion": ["account.updated"]},
    "account.balance_updated": {
        "finaegis": ["account.balance_updated"],
        "account_lifecycle": ["BALANCE_UPDATE", "3019", "DEPOSIT_BALANCE_UPDATE", "3020"],
    },
    "account.credited": {"account_lifecycle": ["ACCOUNT_CREDITED", "3023"]},
    "account.debited": {"account_lifecycle": ["ACCOUNT_DEBITED", "3024"]},
    "account.request_approved": {"account_lifecycle": ["ACCOUNT_REQUEST_APPROVED", "2196"]},
    "account.request_rejected": {"account_lifecycle": ["ACCOUNT_REQUEST_REJECTED", "2198"]},
    "account.frozen": {"finaegis": ["account.frozen"]},
    "account.unfrozen": {"finaegis": ["account.unfrozen"]},
    "account.closed": {"finaegis": ["account.closed"]},
    "account.connected": {"finexer": ["bank_account.import", "bank_account.created"]},
    "transfer.created": {"finaegis": ["transfer.created"]},
    "transfer.pending": {"finaegis": ["transfer.pending"]},
    "transfer.reversed": {"finaegis": ["transfer.reversed"]},
    "transfer.expired": {"finaegis": ["transfer.expired"]},
    "transfer.succeeded": {
        "finaegis": ["transfer.completed"],
        "finfusion": ["transfer.succeeded"],
        "account_lifecycle": ["TRANSACTION_CONFIRMED", "3021"],
    },
    "transfer.failed": {
        "finaegis": ["transfer.failed"],
        "finfusion": ["transfer.failed"],
        "account_lifecycle": ["TRANSACTION_REJECTED", "3022"],
    },
    "payment.created": {
        "finchpay": ["CREATED"],
        "finexer": ["payment.created", "payment.initiated"],
    },
    "payment.processing": {"finchpay": ["RECEIVED", "PROCESSING", "SENDING", "HOLD"]},
    "payment.succeeded": {
        "finfusion": ["payment.succeeded"],
        "finchpay": ["COMPLETE"],
        "finexer": ["payment.completed", "payment.succeeded"],
    },
    "payment.failed": {
        "finfusion": ["payment.failed"],
        "finchpay": ["ERROR", "REJECTED_BY_ANTI_FRAUD"],
        "finexer": ["payment.failed"],
    },
    "payment.refunded": {"finfusion": ["payment.refunded"], "finchpay": ["REFUNDED"]},
    "payment.disputed": {"finfusion": ["payment.disputed"]},
    "payment.expired": {"finchpay": ["EXPIRED"]},
    "card.created": {"finfusion": ["card.created"]},
    "card.activated": {"finfusion": ["card.activated"]},
    "card.blocked": {"finfusion": ["card.blocked"]},
    "card.transaction": {"finfusion": ["card.transaction"]},
    "consent.created": {"finexer": ["consent.created"]},
    "consent.authorized": {
        "finexer": ["consent.authorised", "consent.authorized", "consent.accepted"]
    },
    "consent.declined": {"finexer": ["consent.declined", "consent.rejected"]},
    "consent.revoked": {"finexer": ["consent.revoked", "consent.canceled", "consent.cancelled"]},
    "transaction.created": {
        "finaegis": ["transaction.created"],
        "finexer": ["transaction.created"],
    },
    "transaction.reversed": {"finaegis": ["transaction.reversed"]},
    "workflow.step_completed": {"finaegis": ["workflow.step_completed"]},
    "workflow.anything_new": {"finaegis": ["workflow.anything_new"]},
    "system.security_alert": {"finaegis": ["system.security_alert"]},
}


def _body(adapter: str, spelling: str) -> bytes:
    builders: dict[str, Callable[[str], object]] = {
        "finaegis": lambda t: {"event": t, "timestamp": "2025-01-14T10:30:00+00:00"},
        "finfusion": lambda t: {"id": "evt_1", "type": t, "created": 1, "data": {"object": {}}},
        "finexer": lambda t: {"id": "evt_1", "type": t, "data": {"object": {"id": "x"}}},
        "finchpay": lambda t: {"id": "tx_1", "status": t},
        "account_lifecycle": lambda t: (
            {"message": "m", "code": int(t)} if t.isdigit() else {"message": "m", "identifier": t}
        ),
    }
    return msgspec.json.encode(builders[adapter](spelling))


ROWS = [
    (canonical, adapter, spelling)
    for canonical, columns in CONTRACT_TABLE.items()
    for adapter, spellings in columns.items()
    for spelling in spellings
]


@pytest.mark.parametrize(("canonical", "adapter", "spelling"), ROWS)
def test_provider_type_maps_to_contract_type(canonical: str, adapter: str, spelling: str) -> None:
    event = ADAPTERS[adapter].normalize(_body(adapter, spelling), {}, settings_for(adapter), NOW)
    assert event.type == canonical
    assert event.data.kind == canonical.partition(".")[0]
    assert event.providertype == spelling


def test_transfer_succeeded_is_one_type_across_three_providers() -> None:
    reports = [
        ("finaegis", "transfer.completed"),
        ("finfusion", "transfer.succeeded"),
        ("account_lifecycle", "TRANSACTION_CONFIRMED"),
    ]
    types = {ADAPTERS[a].normalize(_body(a, t), {}, settings_for(a), NOW).type for a, t in reports}
    assert types == {"transfer.succeeded"}


@pytest.mark.parametrize(
    ("adapter", "spelling", "expected"),
    [
        ("finaegis", "balance.low", "finaegis.balance.low"),
        ("finaegis", "swap.completed", "finaegis.swap.completed"),
        ("finfusion", "customer.created", "finfusion.customer.created"),
        ("finexer", "account.updated", "finexer.account.updated"),
        ("finchpay", "WAITING_FOR_KYC", "finchpay.WAITING_FOR_KYC"),
        ("account_lifecycle", "CARD_ISSUED", "account_lifecycle.CARD_ISSUED"),
        ("account_lifecycle", "4001", "account_lifecycle.4001"),
    ],
)
def test_unknown_provider_type_is_accepted_as_unmapped(
    adapter: str, spelling: str, expected: str
) -> None:
    event = ADAPTERS[adapter].normalize(_body(adapter, spelling), {}, settings_for(adapter), NOW)
    assert event.type == expected
    assert event.data.kind == "unmapped"


def test_lifecycle_maps_by_code_when_identifier_is_unknown() -> None:
    body = b'{"message":"m","identifier":"TXN_OK_V2","code":3021,"transactionId":"T1"}'
    event = ADAPTERS["account_lifecycle"].normalize(
        body, {}, settings_for("account_lifecycle"), NOW
    )
    assert event.type == "transfer.succeeded"
    assert event.providertype == "TXN_OK_V2"


def test_lifecycle_maps_by_identifier_when_code_is_unknown() -> None:
    body = b'{"message":"m","identifier":"ACCOUNT_DEBITED","code":9999}'
    event = ADAPTERS["account_lifecycle"].normalize(
        body, {}, settings_for("account_lifecycle"), NOW
    )
    assert event.type == "account.debited"


def test_every_adapter_table_names_only_canonical_types() -> None:
    from adapters import account_lifecycle, finaegis, finchpay, finexer, finfusion
    from schemas.taxonomy import is_canonical_type

    tables = [
        finaegis.TYPE_TABLE,
        finexer.TYPE_TABLE,
        finfusion.TYPE_TABLE,
        finchpay.TYPE_TABLE,
        account_lifecycle.IDENTIFIER_TABLE,
        account_lifecycle.CODE_TABLE,
    ]
    for table in tables:
        for provider_type, canonical in table.items():
            assert is_canonical_type(canonical), f"{provider_type} -> {canonical}"

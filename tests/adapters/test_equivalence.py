"""The same real-world fact gets the same canonical type and status whichever provider reports it.

Every cell of docs/reference/types.md, and the status rule of section 2, written out here
independently of the adapters' own tables and of schemas/taxonomy.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import msgspec
import pytest

from adapters.registry import ADAPTERS
from adapters.samples import sample_body
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

# canonical type -> `data.status` (docs/reference/event.md): the action, except null for the types
# that report something other than a new state of the subject. Written out, not computed.
CONTRACT_STATUS: dict[str, str | None] = {
    "account.created": "created",
    "account.updated": None,
    "account.balance_updated": None,
    "account.credited": None,
    "account.debited": None,
    "account.request_approved": "request_approved",
    "account.request_rejected": "request_rejected",
    "account.frozen": "frozen",
    "account.unfrozen": "unfrozen",
    "account.closed": "closed",
    "account.connected": "connected",
    "transfer.created": "created",
    "transfer.pending": "pending",
    "transfer.reversed": "reversed",
    "transfer.expired": "expired",
    "transfer.succeeded": "succeeded",
    "transfer.failed": "failed",
    "payment.created": "created",
    "payment.processing": "processing",
    "payment.succeeded": "succeeded",
    "payment.failed": "failed",
    "payment.refunded": "refunded",
    "payment.disputed": "disputed",
    "payment.expired": "expired",
    "card.created": "created",
    "card.activated": "activated",
    "card.blocked": "blocked",
    "card.transaction": None,
    "consent.created": "created",
    "consent.authorized": "authorized",
    "consent.declined": "declined",
    "consent.revoked": "revoked",
    "transaction.created": "created",
    "transaction.reversed": "reversed",
    "workflow.step_completed": None,
    "workflow.anything_new": "anything_new",
    "system.security_alert": None,
}
# Adapters whose payload has a status field of its own (docs/reference/event.md); FinchPay's status
# is its event type, and the lifecycle provider has none.
STATUS_FIELD_ADAPTERS = frozenset({"finaegis", "finfusion", "finexer"})
STATUS_IS_TYPE_ADAPTERS = frozenset({"finchpay"})
NO_STATUS_ADAPTERS = frozenset({"account_lifecycle"})


def test_every_builtin_adapter_has_its_column_in_the_contract_table() -> None:
    # A new built-in fails here until its spellings are written out above.
    named = {adapter for columns in CONTRACT_TABLE.values() for adapter in columns}
    assert named == set(ADAPTERS)


def test_every_builtin_adapter_says_where_its_provider_status_is() -> None:
    groups = (STATUS_FIELD_ADAPTERS, STATUS_IS_TYPE_ADAPTERS, NO_STATUS_ADAPTERS)
    assert sum(len(group) for group in groups) == len(set().union(*groups))  # disjoint
    assert set().union(*groups) == set(ADAPTERS)


def _provider_status(adapter: str, spelling: str, own_field: str | None) -> str | None:
    """`data.provider_status` of `adapter` reporting `spelling` with `own_field` in its status
    field (docs/reference/event.md)."""
    if adapter in STATUS_FIELD_ADAPTERS:
        return own_field
    if adapter in STATUS_IS_TYPE_ADAPTERS:
        return spelling  # the status is the event: `COMPLETE` stays
    assert adapter in NO_STATUS_ADAPTERS, adapter
    return None  # the lifecycle provider has no status field


def _body(adapter: str, spelling: str, provider_status: str | None = None) -> bytes:
    """The smallest body of `adapter` reporting `spelling`, with `provider_status` in the field
    docs/reference/event.md names for the provider's own status (FinchPay's is its type; the
    lifecycle provider has none)."""
    status = {} if provider_status is None else {"status": provider_status}
    builders: dict[str, Callable[[str], object]] = {
        "finaegis": lambda t: {"event": t, "timestamp": "2025-01-14T10:30:00+00:00", **status},
        "finfusion": lambda t: {"id": "evt_1", "type": t, "created": 1, "data": {"object": status}},
        "finexer": lambda t: {"id": "evt_1", "type": t, "data": {"object": {"id": "x", **status}}},
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
    events = [ADAPTERS[a].normalize(_body(a, t), {}, settings_for(a), NOW) for a, t in reports]
    assert {event.type for event in events} == {"transfer.succeeded"}
    assert {event.data.status for event in events} == {"succeeded"}


UNMAPPED_CASES = [
    ("finaegis", "balance.low", "finaegis.balance.low"),
    ("finaegis", "swap.completed", "finaegis.swap.completed"),
    ("finfusion", "customer.created", "finfusion.customer.created"),
    ("finexer", "account.updated", "finexer.account.updated"),
    ("finchpay", "WAITING_FOR_KYC", "finchpay.WAITING_FOR_KYC"),
    ("account_lifecycle", "CARD_ISSUED", "account_lifecycle.CARD_ISSUED"),
    ("account_lifecycle", "4001", "account_lifecycle.4001"),
]


def test_every_builtin_adapter_has_an_unmapped_case() -> None:
    assert {adapter for adapter, _, _ in UNMAPPED_CASES} == set(ADAPTERS)


@pytest.mark.parametrize(("adapter", "spelling", "expected"), UNMAPPED_CASES)
def test_unknown_provider_type_is_accepted_as_unmapped(
    adapter: str, spelling: str, expected: str
) -> None:
    body = _body(adapter, spelling, provider_status="Weird Status")
    event = ADAPTERS[adapter].normalize(body, {}, settings_for(adapter), NOW)
    assert event.type == expected
    assert event.data.kind == "unmapped"
    # No canonical status for what no table knows; the provider's own word is still kept.
    assert event.data.status is None
    assert event.data.provider_status == _provider_status(adapter, spelling, "Weird Status")


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


def _type_tables(adapter: str) -> dict[str, Mapping[object, str]]:
    """The `*_TABLE` mappings of the module `adapter` is defined in (TYPE_TABLE; the lifecycle
    provider's IDENTIFIER_TABLE and CODE_TABLE)."""
    module = inspect.getmodule(ADAPTERS[adapter].read_facts)
    assert module is not None, adapter
    return {
        name: value
        for name, value in vars(module).items()
        if name.endswith("_TABLE") and isinstance(value, Mapping)
    }


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_every_adapter_table_names_only_canonical_types(adapter: str) -> None:
    from schemas.taxonomy import is_canonical_type

    tables = _type_tables(adapter)
    assert tables, f"{adapter} has no *_TABLE of provider types"
    for table_name, table in tables.items():
        for provider_type, canonical in table.items():
            assert is_canonical_type(canonical), f"{table_name}: {provider_type} -> {canonical}"


# `data.status` is canonical; `data.provider_status` is the provider's word
# (docs/reference/event.md).


def _normalize(adapter: str, body: bytes) -> tuple[str | None, str | None]:
    event = ADAPTERS[adapter].normalize(body, {}, settings_for(adapter), NOW)
    return event.data.status, event.data.provider_status


def test_every_contract_type_has_its_status_written_out() -> None:
    assert set(CONTRACT_STATUS) == set(CONTRACT_TABLE)


@pytest.mark.parametrize(("canonical", "adapter", "spelling"), ROWS)
@pytest.mark.parametrize("provider_word", [None, "completed", "ACTIVE", "Weird / Status 42"])
def test_status_is_the_contracts_whatever_the_provider_says(
    canonical: str, adapter: str, spelling: str, provider_word: str | None
) -> None:
    status, _ = _normalize(adapter, _body(adapter, spelling, provider_word))
    assert status == CONTRACT_STATUS[canonical]


@pytest.mark.parametrize(("canonical", "adapter", "spelling"), ROWS)
@pytest.mark.parametrize("provider_word", [None, "authorised", "COMPLETE", " Mixed-case, spaced "])
def test_provider_status_is_the_providers_own_word_verbatim(
    canonical: str, adapter: str, spelling: str, provider_word: str | None
) -> None:
    _, provider_status = _normalize(adapter, _body(adapter, spelling, provider_word))
    assert provider_status == _provider_status(adapter, spelling, provider_word)


def _sample(adapter: str, spelling: str) -> bytes:
    if spelling.isdigit():  # a lifecycle code: samples name events by identifier
        return _body(adapter, spelling)
    return sample_body(adapter, spelling, NOW)


@pytest.mark.parametrize("canonical", sorted(CONTRACT_TABLE))
def test_one_fact_gets_one_status_whichever_provider_reports_it(canonical: str) -> None:
    reports = [
        (adapter, spelling)
        for adapter, spellings in CONTRACT_TABLE[canonical].items()
        for spelling in spellings
    ]
    results = {(a, s): _normalize(a, _sample(a, s)) for a, s in reports}
    assert {status for status, _ in results.values()} == {CONTRACT_STATUS[canonical]}
    for (adapter, spelling), (_, provider_status) in results.items():
        # The samples write the provider's own word as its APIs do: the last part of the type.
        expected = _provider_status(adapter, spelling, spelling.rpartition(".")[2])
        assert provider_status == expected, (adapter, spelling)


@pytest.mark.parametrize(
    ("adapter", "spelling", "status", "provider_status"),
    [
        ("finaegis", "transfer.completed", "succeeded", "completed"),
        ("finfusion", "transfer.succeeded", "succeeded", "succeeded"),
        ("account_lifecycle", "TRANSACTION_CONFIRMED", "succeeded", None),
        ("finchpay", "COMPLETE", "succeeded", "COMPLETE"),
        ("finexer", "consent.authorised", "authorized", "authorised"),
        ("finexer", "bank_account.import", "connected", "import"),
    ],
)
def test_the_issues_examples_get_the_canonical_status(
    adapter: str, spelling: str, status: str, provider_status: str | None
) -> None:
    # Issue 11: each of these used to carry the provider's word (or null) in `data.status`.
    assert _normalize(adapter, sample_body(adapter, spelling, NOW)) == (status, provider_status)


@pytest.mark.parametrize(
    ("body", "provider_status"),
    [
        (b'{"event":"transfer.completed","status":"completed"}', "completed"),
        (b'{"event_type":"transfer.completed","data":{"status":"done"}}', "done"),
        (b'{"event_type":"transfer.completed","status":"top","data":{"status":"own"}}', "own"),
        (b'{"event_type":"transfer.completed","status":"top","data":{"transfer_uuid":"t"}}', "top"),
        (b'{"type":"transfer.completed","data":{"transfer_uuid":"t"}}', None),
    ],
    ids=["flat", "envelope", "envelope-and-top", "envelope-top-only", "none"],
)
def test_finaegis_provider_status_is_status_or_data_status(
    body: bytes, provider_status: str | None
) -> None:
    assert _normalize("finaegis", body) == ("succeeded", provider_status)

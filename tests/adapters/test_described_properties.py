"""Properties of reading a described provider's events (docs/reference/providers.md).

On any JSON (and any bytes), normalize returns a canonical event or raises InvalidPayload, and
nothing else: a provider's body can make a 422, never a 500. The generated Structs
(structs.py) and the expressions over the decoded body give the same answer on every body. The
type table follows its rules: exact key over prefix, longer prefix over shorter, `*` keeps the
rest, and nothing outside the taxonomy comes out of it.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import Adapter
from adapters.described import described_adapter, parse_description
from adapters.described.type_table import TypeTable
from adapters.errors import InvalidPayload
from adapters.source import SourceSettings
from schemas.event import decode_event, encode_event
from schemas.taxonomy import CANONICAL_TYPES, KINDS, is_canonical_type
from tests.support import NOW

PROPERTY = settings(
    max_examples=150,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SETTINGS = SourceSettings(name="ledgerly-main", adapter="ledgerly", currency="EUR")

SIGNATURE = '[signature]\nscheme = "none"\n'
DESCRIPTIONS: dict[str, str] = {
    # Field paths only: read by generated Structs.
    "paths": """
        [event]
        id = "id"
        type = "type"
        time = "created"
        subject = "data.object.id"
        status = "data.object.status"
        amount = "data.object.amount"
        currency = "data.object.currency"
        reference = "data.object.reference"
        account_number = "data.object.account.number"
        account_name = "data.object.account.name || data.object.name"
        account_iban = "header:x-iban"
        balance = "data.object.balance"
        [types]
        "account.*" = "account.*"
        "payment.ok" = "payment.succeeded"
        """,
    # Any JMESPath: read by its interpreter.
    "queries": """
        [event]
        type = "type || data.type"
        time = "data.items[0].created"
        subject = "data.items[-1].id"
        amount = "sum(data.items[].amount)"
        amount_unit = "major"
        status = "data.items[?amount > `1`] | [0].status"
        reference = "to_string(data.object)"
        """,
    # A batch.
    "each": """
        [event]
        each = "events"
        type = "type"
        subject = "data.object.id"
        amount = "data.object.amount"
        currency = "data.object.currency"
        time = "created"
        """,
}

NAMES = [
    "id",
    "type",
    "created",
    "data",
    "object",
    "amount",
    "currency",
    "status",
    "items",
    "events",
    "account",
    "name",
    "number",
    "balance",
    "reference",
    "x",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["payment.ok", "account.x", "EUR", "usd", "12.50", "1767323045", "2026-01-02T03:04:05Z", ""]
    )
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=30,
)
# Bodies shaped like the descriptions' paths, so that the properties reach every field.


def mostly(good: list[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Good values three times in four: every field of an event must be good for the event
    to be read, and the properties must reach that far."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), other)


TEXTS = mostly(["pay_1", "paid", "Ada", "12345678", 42], st.text(max_size=8) | SCALARS)
TYPES = mostly(["payment.ok", "account.opened", "charge.x", "payment.failed"], TEXTS)
AMOUNTS = mostly([1050, "1050", "12.50", 12.5, 0, -3, 10**30], SCALARS)
CURRENCIES = mostly(["EUR", "usd", "JPY", "USDT"], SCALARS)
OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "id": TEXTS,
        "amount": AMOUNTS,
        "currency": CURRENCIES,
        "status": TEXTS,
        "reference": TEXTS,
        "balance": AMOUNTS,
        "name": TEXTS,
        "account": st.fixed_dictionaries({}, optional={"name": TEXTS, "number": TEXTS}) | JSON,
    },
)
ITEMS = st.lists(
    st.fixed_dictionaries(
        {}, optional={"amount": AMOUNTS, "status": TEXTS, "id": TEXTS, "created": SCALARS}
    )
    | JSON,
    max_size=3,
)
EVENTS = st.fixed_dictionaries(
    {"type": TYPES},
    optional={
        "id": TEXTS,
        "created": mostly([1767323045, "2026-01-02T03:04:05Z", 1767323045000, 1.5e9], SCALARS),
        "data": st.fixed_dictionaries({}, optional={"object": OBJECTS | JSON, "items": ITEMS})
        | JSON,
    },
)
SHAPED = EVENTS | st.fixed_dictionaries({"events": st.lists(EVENTS | JSON, max_size=3) | JSON})


def adapter(name: str) -> Adapter:
    description, problems = parse_description(
        tomllib.loads(SIGNATURE + DESCRIPTIONS[name]), f"providers.{name}"
    )
    assert problems == []
    assert description is not None
    return described_adapter("ledgerly", description, "config")


ADAPTERS = {name: adapter(name) for name in DESCRIPTIONS}


def outcome(made: Adapter, body: bytes, headers: dict[str, str]) -> list[bytes] | str:
    """Every event's JSON, or the InvalidPayload's detail; anything else fails the test."""
    try:
        events = made.normalize_all(body, headers, SETTINGS, NOW)
    except InvalidPayload as error:
        return error.detail
    for event in events:
        decode_event(encode_event(event))  # what is made obeys the canonical schema
    return [encode_event(event) for event in events]


@pytest.mark.parametrize("name", DESCRIPTIONS)
@PROPERTY
@given(document=SHAPED | JSON, iban=st.none() | st.text(max_size=8))
def test_normalize_only_ever_raises_invalid_payload_on_any_json(
    name: str, document: Any, iban: str | None
) -> None:
    headers = {} if iban is None else {"x-iban": iban}
    outcome(ADAPTERS[name], json.dumps(document).encode(), headers)


@pytest.mark.parametrize("name", DESCRIPTIONS)
@PROPERTY
@given(body=st.binary(max_size=64))
def test_normalize_only_ever_raises_invalid_payload_on_any_bytes(name: str, body: bytes) -> None:
    outcome(ADAPTERS[name], body, {})


@pytest.mark.parametrize("name", ["paths", "each"])
@PROPERTY
@given(document=SHAPED | JSON, iban=st.none() | st.text(max_size=8))
def test_generated_structs_and_expressions_agree_on_any_json(
    name: str, document: Any, iban: str | None
) -> None:
    body = json.dumps(document).encode()
    headers = {} if iban is None else {"x-iban": iban}
    fast = outcome(ADAPTERS[name], body, headers)
    general = adapter(name)
    general.read_facts.__self__._structs = None  # type: ignore[attr-defined]
    slow = outcome(general, body, headers)
    if name == "each" and isinstance(fast, list):
        # The expressions re-encode each event, the Structs keep its bytes: compare all else.
        fast = [_without_payload(event) for event in fast]
        slow = [_without_payload(event) for event in slow]  # type: ignore[union-attr]
    assert fast == slow


def _without_payload(event: bytes) -> object:
    decoded = json.loads(event)
    decoded["data"].pop("provider_payload")
    # Without an id expression the key is the event's JSON: its spelling differs here.
    decoded.pop("id")
    return decoded


# The type table.

PREFIXES = st.sampled_from(["", "p", "pay", "payment", "payment.", "payment.c", "payout.", "x"])
KIND_GLOBS = st.sampled_from([f"{kind}.*" for kind in KINDS] + [f"{kind}.re*" for kind in KINDS])
TARGETS = st.sampled_from(sorted(CANONICAL_TYPES)) | KIND_GLOBS
TABLES = st.dictionaries(
    st.one_of(
        PREFIXES.map(lambda prefix: prefix + "*"),
        st.sampled_from(["payment.completed", "payout.paid", "pay", "x.y"]),
    ),
    TARGETS,
    max_size=8,
).map(lambda table: {k: v for k, v in table.items() if not v.endswith("*") or k.endswith("*")})
PROVIDER_TYPES = st.sampled_from(
    [
        "payment.completed",
        "payment.created",
        "payout.paid",
        "payout.failed",
        "pay",
        "x.y",
        "zzz",
        "payment.refunded",
        "paymentx",
        "",
    ]
) | st.text(alphabet="paymentou.cdx*", max_size=12)


def reference_mapping(table: dict[str, str], provider_type: str) -> str | None:
    """docs/reference/providers.md's rules, written the slow and obvious way."""
    if provider_type in table and not provider_type.endswith("*"):
        return table[provider_type]
    matching = [key for key in table if key.endswith("*") and provider_type.startswith(key[:-1])]
    if not matching:
        return None
    key = max(matching, key=len)
    target = table[key]
    if not target.endswith("*"):
        return target
    mapped = target[:-1] + provider_type[len(key) - 1 :]
    return mapped if is_canonical_type(mapped) else None


@PROPERTY
@given(table=TABLES, provider_type=PROVIDER_TYPES)
def test_the_type_table_follows_its_rules(table: dict[str, str], provider_type: str) -> None:
    mapped = TypeTable(table).canonical(provider_type)
    assert mapped == reference_mapping(table, provider_type)
    assert mapped is None or is_canonical_type(mapped)


@PROPERTY
@given(table=TABLES, wanted=st.sampled_from(sorted(CANONICAL_TYPES)))
def test_a_sample_type_found_in_the_table_maps_back(table: dict[str, str], wanted: str) -> None:
    types = TypeTable(table)
    provider_type = types.provider_type(wanted)
    if provider_type is not None:
        assert types.canonical(provider_type) == wanted

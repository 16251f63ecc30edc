"""Whatever an authenticated client posts, normalize answers with an event or InvalidPayload.

docs/reference/ingress.md: a body that is not JSON or not the provider's shape is a 422 with a path
and a reason, and is quarantined; it must never be a 500. So for every adapter: truncated JSON,
wrong types for each typed field its Structs declare, missing required fields, empty and non-object
bodies, absurd nesting, huge numbers, invalid UTF-8, NUL bytes and over-long types each raise
InvalidPayload (a `$...` path, a reason), and no input at all raises anything else. Every event that
does come out validates against the checked-in JSON Schema, decodes back, and obeys the status rule
of docs/reference/event.md (`data.status` from the type alone, `data.provider_status` the provider's
own word).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters import account_lifecycle, finaegis, finchpay, finexer, finfusion
from adapters.errors import InvalidPayload
from adapters.registry import ADAPTERS
from adapters.source import SourceSettings
from schemas.event import CanonicalEvent, decode_event, encode_event
from schemas.jsonschema import SCHEMA_PATH
from tests.support import NOW, settings_for

PROPERTY = settings(
    max_examples=200,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
ADAPTER_NAMES = sorted(ADAPTERS)
Path = tuple[str, ...]

# The Struct each adapter decodes its body into.
STRUCTS: dict[str, type[msgspec.Struct]] = {
    "finaegis": finaegis.FinAegisBody,
    "finexer": finexer.FinexerEvent,
    "finfusion": finfusion.FinFusionEvent,
    "finchpay": finchpay.FinchPayTransaction,
    "account_lifecycle": account_lifecycle.LifecycleEvent,
}
# The smallest body each adapter accepts.
MINIMAL: dict[str, dict[str, Any]] = {
    "finaegis": {"event": "account.created", "timestamp": "2025-01-14T10:30:00+00:00"},
    "finexer": {"id": "evt_1", "type": "consent.created", "created_at": "2020-01-30T12:44:55Z"},
    "finfusion": {"id": "evt_1", "type": "payment.succeeded", "created": 1634567890},
    "finchpay": {"id": "tx_1", "status": "COMPLETE"},
    "account_lifecycle": {"identifier": "ACCOUNT_CREATED"},
}
# Where each adapter reads the provider's event type, amount (with currency) and time.
TYPE_FIELD: dict[str, Path] = {
    "finaegis": ("event",),
    "finexer": ("type",),
    "finfusion": ("type",),
    "finchpay": ("status",),
    "account_lifecycle": ("identifier",),
}
AMOUNT_FIELD: dict[str, tuple[Path, dict[str, Any]]] = {
    "finaegis": (("amount",), {"currency": "USD"}),
    "finexer": (("data", "object", "amount"), {"data": {"object": {"currency": "GBP"}}}),
    "finfusion": (("data", "object", "amount"), {"data": {"object": {"currency": "usd"}}}),
    "finchpay": (("amount_from",), {"asset_from": "EUR"}),
    "account_lifecycle": (("amount",), {}),  # the source's currency
}
TIME_FIELD: dict[str, Path] = {
    "finaegis": ("timestamp",),
    "finexer": ("created_at",),
    "finfusion": ("created",),
    "finchpay": ("event_time",),
}
# The lifecycle provider's payload has no time field.
NO_TIME_FIELD = frozenset({"account_lifecycle"})
# Fields without which there is no event: the Structs' required ones, plus the type.
REQUIRED: dict[str, list[str]] = {
    "finaegis": ["event"],
    "finexer": ["id", "type"],
    "finfusion": ["id", "type"],
    "finchpay": ["id", "status"],
    "account_lifecycle": ["identifier"],
}
TYPE_TABLES: dict[str, list[str]] = {
    "finaegis": [
        *finaegis.TYPE_TABLE,
        "workflow.started",
        "workflow.step_completed",
        "system.security_alert",
    ],
    "finexer": list(finexer.TYPE_TABLE),
    "finfusion": list(finfusion.TYPE_TABLE),
    "finchpay": list(finchpay.TYPE_TABLE),
    "account_lifecycle": list(account_lifecycle.IDENTIFIER_TABLE),
}
WRONG_TYPE_CANDIDATES: tuple[Any, ...] = (None, True, 7, 1.5, "text", [1], {"k": 1})
DEEP = 100_000


@pytest.mark.parametrize(
    "table",
    [STRUCTS, MINIMAL, TYPE_FIELD, AMOUNT_FIELD, REQUIRED, TYPE_TABLES],
    ids=["STRUCTS", "MINIMAL", "TYPE_FIELD", "AMOUNT_FIELD", "REQUIRED", "TYPE_TABLES"],
)
def test_every_table_here_names_every_builtin_adapter(table: Mapping[str, object]) -> None:
    # A new built-in fails here until its fields are written out above.
    assert set(table) == set(ADAPTERS)


def test_every_builtin_adapter_has_a_time_field_or_none() -> None:
    assert not set(TIME_FIELD) & NO_TIME_FIELD
    assert set(TIME_FIELD) | NO_TIME_FIELD == set(ADAPTERS)


VALIDATOR = jsonschema.Draft202012Validator(
    json.loads(SCHEMA_PATH.read_text(encoding="utf-8")),
    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
)


def source_settings(adapter: str) -> SourceSettings:
    return settings_for(adapter, currency="USD")


SETTINGS = {name: source_settings(name) for name in ADAPTER_NAMES}


def dumps(value: Any) -> bytes:
    """JSON text; Decimals are written as numbers with all their digits."""
    return msgspec.json.Encoder(decimal_format="number").encode(value)


def with_value(document: Mapping[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of `document` with `value` at `path`, creating objects on the way."""
    result = copy.deepcopy(dict(document))
    target = result
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return result


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def json_path(path: Path) -> str:
    return "$" + "".join(f".{key}" for key in path)


def normalize(adapter: str, body: bytes, headers: Mapping[str, str] | None = None) -> Any:
    return ADAPTERS[adapter].normalize(body, headers or {}, SETTINGS[adapter], NOW)


def invalid(adapter: str, body: bytes, headers: Mapping[str, str] | None = None) -> InvalidPayload:
    """The InvalidPayload normalize raises; an event or any other exception fails the test."""
    with pytest.raises(InvalidPayload) as caught:
        normalize(adapter, body, headers)
    error = caught.value
    assert error.path.startswith("$"), error.path
    assert error.reason.strip(), "the reason is empty"
    assert error.detail
    return error


# docs/reference/event.md, written out independently of schemas/taxonomy.py: the types whose
# `data.status` is null although they are mapped (besides every `system.*`).
STATELESS_TYPES = frozenset(
    {
        "account.updated",
        "account.balance_updated",
        "account.credited",
        "account.debited",
        "card.transaction",
        "workflow.step_completed",
    }
)


def contract_status(event: CanonicalEvent) -> str | None:
    """`data.status` as docs/reference/event.md defines it: the action of the type, or null."""
    kind, _, action = event.type.partition(".")
    if event.data.kind == "unmapped" or kind == "system" or event.type in STATELESS_TYPES:
        return None
    return action


def contract_provider_status(adapter: str, payload: Any) -> Any:
    """`data.provider_status` as docs/reference/event.md defines it, read from the provider's
    JSON."""
    data = payload.get("data")
    if adapter in ("finexer", "finfusion"):
        target = data.get("object") if isinstance(data, dict) else None
        return target.get("status") if isinstance(target, dict) else None
    if adapter == "finaegis":
        fields = data if isinstance(data, dict) else payload  # `data` makes it an envelope
        own = fields.get("status")
        return own if own is not None else payload.get("status")
    if adapter == "finchpay":
        return payload["status"]
    assert adapter == "account_lifecycle", f"no provider_status rule for {adapter} here"
    return None  # the lifecycle provider has no status field


def assert_valid_event(event: CanonicalEvent, body: bytes) -> None:
    """The event's bytes validate against the checked-in schema and decode to the same event,
    and its two statuses are what the contract says."""
    encoded = encode_event(event)
    # Decimal for numbers: the provider's payload may hold 1e999999 or a 1000-digit integer.
    document = json.loads(encoded, parse_int=Decimal, parse_float=Decimal)
    errors = [f"{error.json_path}: {error.message}" for error in VALIDATOR.iter_errors(document)]
    assert not errors, errors
    assert decode_event(encoded) == event
    assert event.data.status == contract_status(event), event.type
    payload = document["data"]["provider_payload"]
    assert event.data.provider_status == contract_provider_status(event.provider, payload)


def event_or_invalid(adapter: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    problem: InvalidPayload | None = None
    try:
        event = normalize(adapter, body, headers)
    except InvalidPayload as error:
        problem = error
    if problem is not None:
        assert problem.path.startswith("$"), problem.path
        assert problem.reason.strip()
        return
    assert_valid_event(event, body)


# The Structs, read.


def _struct_in(annotation: Any) -> type[msgspec.Struct] | None:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        for member in get_args(annotation):
            found = _struct_in(member)
            if found is not None:
                return found
    return None


def typed_fields(struct: type[msgspec.Struct], prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every field the Struct declares, nested Structs included, by its JSON path."""
    for field in msgspec.structs.fields(struct):
        path = (*prefix, field.encode_name)
        yield path, field.type
        nested = _struct_in(field.type)
        if nested is not None:
            yield from typed_fields(nested, path)


def is_wrong_type(value: Any, annotation: Any) -> bool:
    try:
        msgspec.json.decode(dumps(value), type=annotation)
    except msgspec.ValidationError:
        return True
    return False


def wrong_type_cases() -> Iterator[Any]:
    for adapter in ADAPTER_NAMES:
        for path, annotation in typed_fields(STRUCTS[adapter]):
            for value in WRONG_TYPE_CANDIDATES:
                if is_wrong_type(value, annotation):
                    yield pytest.param(
                        adapter, path, value, id=f"{adapter}-{json_path(path)}-{value!r}"
                    )


def test_minimal_bodies_are_valid() -> None:
    for adapter in ADAPTER_NAMES:
        body = dumps(MINIMAL[adapter])
        assert_valid_event(normalize(adapter, body), body)


def test_required_lists_cover_the_structs_required_fields() -> None:
    for adapter, struct in STRUCTS.items():
        declared = {f.encode_name for f in msgspec.structs.fields(struct) if f.required}
        assert declared <= set(REQUIRED[adapter]), adapter


def test_every_declared_field_has_a_wrong_type_case() -> None:
    covered = {(case.values[0], case.values[1]) for case in wrong_type_cases()}
    for adapter in ADAPTER_NAMES:
        for path, _ in typed_fields(STRUCTS[adapter]):
            assert (adapter, path) in covered, (adapter, path)


# Wrong types and missing fields.


@pytest.mark.parametrize(("adapter", "path", "value"), list(wrong_type_cases()))
def test_wrong_type_for_a_declared_field_is_invalid_payload_at_that_field(
    adapter: str, path: Path, value: Any
) -> None:
    body = dumps(with_value(MINIMAL[adapter], path, value))
    error = invalid(adapter, body)
    assert error.path == json_path(path)


@pytest.mark.parametrize(
    ("adapter", "field"),
    [(adapter, field) for adapter in ADAPTER_NAMES for field in REQUIRED[adapter]],
)
def test_missing_required_field_is_invalid_payload(adapter: str, field: str) -> None:
    document = {k: v for k, v in MINIMAL[adapter].items() if k != field}
    invalid(adapter, dumps(document))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
def test_empty_object_is_invalid_payload(adapter: str) -> None:
    invalid(adapter, b"{}")


# Not JSON, or not an object.


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
def test_every_truncation_of_a_valid_body_is_invalid_payload(adapter: str) -> None:
    body = dumps(MINIMAL[adapter])
    for end in range(len(body)):
        invalid(adapter, body[:end])


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize(
    "body",
    [b"", b" ", b" \t\r\n  ", b"\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf  "],
    ids=["empty", "space", "whitespace", "newline", "bom", "bom-space"],
)
def test_empty_or_whitespace_body_is_invalid_payload(adapter: str, body: bytes) -> None:
    assert invalid(adapter, body).path == "$"


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize(
    "body",
    [b"[]", b"[{}]", b'"a string"', b'"{\\"id\\": 1}"', b"42", b"-1.5e3", b"null", b"true"],
)
def test_json_that_is_not_an_object_is_invalid_payload(adapter: str, body: bytes) -> None:
    assert invalid(adapter, body).path == "$"


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
def test_valid_body_wrapped_in_an_array_is_invalid_payload(adapter: str) -> None:
    assert invalid(adapter, b"[" + dumps(MINIMAL[adapter]) + b"]").path == "$"


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize("suffix", [b"}", b",", b"{}", b"x", b"\x00", b"// comment"], ids=repr)
def test_trailing_garbage_after_the_object_is_invalid_payload(adapter: str, suffix: bytes) -> None:
    invalid(adapter, dumps(MINIMAL[adapter]) + suffix)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize(
    "body",
    [b"{'id': 1}", b"{id: 1}", b'{"id": NaN}', b'{"id": Infinity}', b'{"a":1,}', b"<xml/>"],
)
def test_almost_json_is_invalid_payload(adapter: str, body: bytes) -> None:
    invalid(adapter, body)


# Nesting.


def _nested_arrays() -> bytes:
    return b"[" * DEEP + b"]" * DEEP


def _nested_objects() -> bytes:
    return b'{"a":' * DEEP + b"1" + b"}" * DEEP


def _with_raw(document: Mapping[str, Any], path: Path, raw: bytes) -> bytes:
    """The JSON text of `document` with `raw` spliced in as the value at `path`."""
    marker = "@@RAW@@"
    return dumps(with_value(document, path, marker)).replace(f'"{marker}"'.encode(), raw)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize("nested", [_nested_arrays, _nested_objects], ids=["arrays", "objects"])
def test_deeply_nested_body_is_invalid_payload(adapter: str, nested: Any) -> None:
    invalid(adapter, nested())


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize("nested", [_nested_arrays, _nested_objects], ids=["arrays", "objects"])
def test_deep_nesting_inside_a_known_field_is_invalid_payload(adapter: str, nested: Any) -> None:
    for path in (TYPE_FIELD[adapter], AMOUNT_FIELD[adapter][0]):
        invalid(adapter, _with_raw(MINIMAL[adapter], path, nested()))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize("nested", [_nested_arrays, _nested_objects], ids=["arrays", "objects"])
def test_deep_nesting_inside_an_unknown_field_is_invalid_payload(adapter: str, nested: Any) -> None:
    # Skipped by the decoder, but kept verbatim in the event: no subscriber could parse it.
    invalid(adapter, _with_raw(MINIMAL[adapter], ("x_unknown",), nested()))


# Numbers.


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize(
    "number",
    [b"1" + b"0" * 400, b"-1" + b"0" * 400, b"1e999999", b"-1e999999", b"1e-999999", b"1" * 4000],
    ids=["10**400", "-10**400", "1e999999", "-1e999999", "1e-999999", "4000-digits"],
)
def test_huge_amount_is_invalid_payload_at_the_amount(adapter: str, number: bytes) -> None:
    path, currency = AMOUNT_FIELD[adapter]
    error = invalid(adapter, _with_raw(merged(MINIMAL[adapter], currency), path, number))
    assert error.path == json_path(path)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize(
    "digits",
    ["12." + "3" * 38, "1" * 20 + "." + "1" * 19, "0." + "0" * 37 + "12"],
    ids=["2+38", "20+19", "0.(37 zeros)12"],
)
def test_amount_with_more_than_38_digits_is_invalid_payload(adapter: str, digits: str) -> None:
    # Money holds at most 38 digits (schemas/money.py): the canonical event's schema allows a
    # value of 40 characters, so a longer one would be an event no subscriber could validate.
    path, currency = AMOUNT_FIELD[adapter]
    number = "9" * 39 if adapter == "finfusion" else digits  # integer minor units there
    error = invalid(adapter, _with_raw(merged(MINIMAL[adapter], currency), path, number.encode()))
    assert error.path == json_path(path)


@pytest.mark.parametrize("adapter", sorted(TIME_FIELD))
@pytest.mark.parametrize(
    "number", [b"1" + b"0" * 400, b"1e999999", b"-1" + b"0" * 400, b"1.5"], ids=repr
)
def test_huge_or_fractional_number_as_time_is_invalid_payload(adapter: str, number: bytes) -> None:
    path = TIME_FIELD[adapter]
    error = invalid(adapter, _with_raw(MINIMAL[adapter], path, number))
    assert error.path == json_path(path)


@pytest.mark.parametrize("adapter", sorted(set(TIME_FIELD) - {"finfusion"}))  # int there
@pytest.mark.parametrize(
    "text",
    ["yesterday", "", "²", "1767323²45", "9" * 5000, "10000-01-01T00:00:00Z", "1e9"],
    ids=lambda text: repr(text)[:20],
)
def test_unreadable_time_text_is_invalid_payload(adapter: str, text: str) -> None:
    path = TIME_FIELD[adapter]
    error = invalid(adapter, dumps(with_value(MINIMAL[adapter], path, text)))
    assert error.path == json_path(path)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize("number", [b"1" + b"0" * 400, b"1e999999", b"-1e999999"], ids=repr)
def test_huge_number_in_an_unknown_field_is_an_event_or_invalid_payload(
    adapter: str, number: bytes
) -> None:
    event_or_invalid(adapter, _with_raw(MINIMAL[adapter], ("x_unknown",), number))


# Bytes that are not UTF-8, NUL, and over-long strings.


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80"],
    ids=repr,
)
def test_invalid_utf8_inside_a_string_of_an_unknown_field_is_invalid_payload(
    adapter: str, raw: bytes
) -> None:
    body = _with_raw(MINIMAL[adapter], ("x_unknown",), b'"abc' + raw + b'def"')
    assert invalid(adapter, body).path == "$"


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
def test_invalid_utf8_inside_a_known_field_is_invalid_payload(adapter: str) -> None:
    invalid(adapter, _with_raw(MINIMAL[adapter], TYPE_FIELD[adapter], b'"payment\xff"'))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize(
    "raw", [b'"\\ud800"', b'"\\udc00x"', b'"\\u12"', b'"\\x41"', b'"tab\there"'], ids=repr
)
def test_bad_string_escapes_are_invalid_payload(adapter: str, raw: bytes) -> None:
    invalid(adapter, _with_raw(MINIMAL[adapter], ("x_unknown",), raw))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize("where", ["unknown", "type", "between"])
def test_raw_nul_byte_is_invalid_payload(adapter: str, where: str) -> None:
    if where == "between":
        body = dumps(MINIMAL[adapter]).replace(b"{", b"{\x00", 1)
    else:
        path = ("x_unknown",) if where == "unknown" else TYPE_FIELD[adapter]
        body = _with_raw(MINIMAL[adapter], path, b'"a\x00b"')
    invalid(adapter, body)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
def test_escaped_nul_in_the_type_is_invalid_payload(adapter: str) -> None:
    invalid(adapter, dumps(with_value(MINIMAL[adapter], TYPE_FIELD[adapter], "pay\x00ment")))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize("length", [201, 257, 10_000, 1_000_000])
def test_over_long_type_string_is_invalid_payload(adapter: str, length: int) -> None:
    long_type = ("payment." + "x" * length)[:length]
    invalid(adapter, dumps(with_value(MINIMAL[adapter], TYPE_FIELD[adapter], long_type)))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@pytest.mark.parametrize("control", ["\n", "\r", "\t", "\x1b", "\x7f"], ids=repr)
def test_type_with_control_characters_is_invalid_payload(adapter: str, control: str) -> None:
    value = f"payment{control}.succeeded"
    invalid(adapter, dumps(with_value(MINIMAL[adapter], TYPE_FIELD[adapter], value)))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
def test_empty_type_string_is_invalid_payload(adapter: str) -> None:
    invalid(adapter, dumps(with_value(MINIMAL[adapter], TYPE_FIELD[adapter], "")))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
def test_long_unknown_type_within_the_limit_is_an_unmapped_event(adapter: str) -> None:
    body = dumps(with_value(MINIMAL[adapter], TYPE_FIELD[adapter], "x" * 200))
    event = normalize(adapter, body)
    assert event.data.kind == "unmapped"
    assert_valid_event(event, body)


# Properties: any JSON, any bytes.

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
DECIMAL_NUMBERS = st.builds(
    lambda digits, exponent: Decimal(f"{digits}E{exponent}"),
    st.integers(min_value=-(10**42), max_value=10**42),
    st.integers(min_value=-45, max_value=45),
)
CURRENCIES = st.sampled_from(["USD", "usd", "JPY", "BHD", "CLF", "USDT", "btc", "", "U", "€UR"])
TIMES = (
    st.datetimes(
        timezones=st.none()
        | st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=14))]
        )
    ).map(lambda when: when.isoformat())
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.from_regex(r"[0-9]{1,14}", fullmatch=True)
    | st.text(alphabet="0123456789-:TZ.+ ²", max_size=30)
)
TIME_NAMES = {"timestamp", "created_at", "created", "event_time"}
CURRENCY_NAMES = {"currency", "asset_from", "asset_to"}


def value_for(adapter: str, name: str, annotation: Any) -> st.SearchStrategy[Any]:
    """Mostly values of the field's own type, sometimes any JSON value at all."""
    nested = _struct_in(annotation)
    if nested is not None:
        plausible: st.SearchStrategy[Any] = struct_dicts(adapter, nested)
    else:
        options: list[st.SearchStrategy[Any]] = []
        members = set(get_args(annotation)) or {annotation}
        if name in (*TYPE_FIELD[adapter], "event_type", "type"):
            options.append(st.sampled_from(TYPE_TABLES[adapter]))
        if name == "code":
            options.append(st.sampled_from(list(account_lifecycle.CODE_TABLE)))
        if name in TIME_NAMES:
            options.append(TIMES)
        if name in CURRENCY_NAMES:
            options.append(CURRENCIES)
        if str in members:
            options.append(st.text(max_size=40))
        if int in members:
            options.append(st.integers() | st.integers(min_value=-(10**45), max_value=10**45))
        if Decimal in members:
            options.append(DECIMAL_NUMBERS | st.decimals(allow_nan=False, allow_infinity=False))
        if NoneType in members:
            options.append(st.none())
        plausible = st.one_of(options)
    # One value in eight is of any type at all.
    return st.integers(min_value=0, max_value=7).flatmap(
        lambda roll: JSON_VALUES if roll == 0 else plausible
    )


def struct_dicts(
    adapter: str, struct: type[msgspec.Struct], top: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects made of the Struct's own keys (each present or not; at the top, the required ones
    always present), plus a few unknown keys."""
    always = set(REQUIRED[adapter]) if top else set()
    strategies = {
        field.encode_name: st.deferred(
            lambda field=field: value_for(adapter, field.encode_name, field.type)
        )
        for field in msgspec.structs.fields(struct)
    }
    return st.builds(
        merged,
        st.fixed_dictionaries(
            {name: strategy for name, strategy in strategies.items() if name in always},
            optional={
                name: strategy for name, strategy in strategies.items() if name not in always
            },
        ),
        st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=2),
    )


ADAPTER_DICTS = {name: struct_dicts(name, STRUCTS[name], top=True) for name in ADAPTER_NAMES}
FINAEGIS_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "x-webhook-event": st.sampled_from(TYPE_TABLES["finaegis"]) | st.text(max_size=20),
        "x-webhook-delivery": st.text(max_size=40),
        "x-finaegis-event-id": st.text(max_size=40),
    },
)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@PROPERTY
@given(value=JSON_VALUES)
def test_any_json_value_is_an_event_or_invalid_payload(adapter: str, value: Any) -> None:
    event_or_invalid(adapter, dumps(value))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@PROPERTY
@given(data=st.data())
def test_any_object_of_the_adapters_own_keys_is_an_event_or_invalid_payload(
    adapter: str, data: st.DataObject
) -> None:
    document = data.draw(ADAPTER_DICTS[adapter], label="body")
    headers: dict[str, str] = {}
    if adapter == "finaegis":
        headers = data.draw(FINAEGIS_HEADERS, label="headers")
    event_or_invalid(adapter, dumps(document), headers)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@PROPERTY
@given(data=st.data())
def test_valid_body_with_one_field_replaced_is_an_event_or_invalid_payload(
    adapter: str, data: st.DataObject
) -> None:
    fields = list(typed_fields(STRUCTS[adapter]))
    path, annotation = data.draw(st.sampled_from(fields), label="field")
    value = data.draw(value_for(adapter, path[-1], annotation), label="value")
    base = merged(MINIMAL[adapter], AMOUNT_FIELD[adapter][1])
    event_or_invalid(adapter, dumps(with_value(base, path, value)))


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@PROPERTY
@given(body=st.binary(max_size=300))
@example(body=b'{"id":"1","status":"X","event":"a.b","identifier":"A","type":"t"}')
def test_any_bytes_are_an_event_or_invalid_payload(adapter: str, body: bytes) -> None:
    event_or_invalid(adapter, body)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@PROPERTY
@given(data=st.data())
def test_any_bytes_inside_a_valid_body_are_an_event_or_invalid_payload(
    adapter: str, data: st.DataObject
) -> None:
    body = dumps(MINIMAL[adapter])
    position = data.draw(st.integers(min_value=0, max_value=len(body)), label="position")
    inserted = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
    event_or_invalid(adapter, body[:position] + inserted + body[position:])


def test_received_at_stands_in_for_a_missing_time() -> None:
    # Not malformed, but the fallback the properties rely on: time is always set.
    event = normalize("account_lifecycle", b'{"identifier":"ACCOUNT_CREATED"}')
    assert event.time == NOW
    assert isinstance(event.time, datetime)
    assert event.data.occurred_at is None

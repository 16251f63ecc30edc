"""Reading a described provider's events (docs/reference/providers.md): fields, money, times, ids,
`each`, types, samples, and what a described adapter says about itself."""

from __future__ import annotations

import hashlib
import json
import tomllib
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from adapters.base import Adapter
from adapters.described import described_adapter, parse_description
from adapters.errors import InvalidPayload
from adapters.finfusion import ADAPTER as FINFUSION
from adapters.samples import SampleError
from adapters.source import Secret, SourceSettings
from schemas.event import CanonicalEvent, canonical_event_id, encode_event
from tests.support import NOW

LEDGERLY = """
[signature]
scheme = "hmac"
header = "X-Ledgerly-Signature"
format = "t={timestamp},v1={signature}"
signed = "{timestamp}.{body}"

[event]
id = "id"
type = "type"
time = "created_at"
subject = "data.object.id"
status = "data.object.status"
amount = "data.object.amount"
currency = "data.object.currency"
reference = "data.object.reference"
account_number = "data.object.account.number"
account_name = "data.object.account.name || data.object.holder"
account_iban = "data.object.account.iban"
balance = "data.object.balance"

[types]
"payment.completed" = "payment.succeeded"
"payment.failed" = "payment.failed"
"payout.*" = "transfer.*"
"account.opened" = "account.created"
"""

SETTINGS = SourceSettings(name="ledgerly-main", adapter="ledgerly", secrets=(Secret("s3cret"),))


def adapter(text: str = LEDGERLY, name: str = "ledgerly", **changes: Any) -> Adapter:
    table = tomllib.loads(text)
    for section, values in changes.items():
        table.setdefault(section, {}).update(values)
    description, problems = parse_description(table, f"providers.{name}")
    assert problems == []
    assert description is not None
    return described_adapter(name, description, "config")


def general(made: Adapter) -> Adapter:
    """The same adapter reading every field by the expressions over the decoded body, never
    through generated Structs: the two must agree (structs.py)."""
    reader = made.read_facts.__self__  # type: ignore[attr-defined]
    reader._structs = None
    return made


def body(**top: Any) -> bytes:
    event: dict[str, Any] = {
        "id": "evt_1",
        "type": "payment.completed",
        "created_at": 1767323045,
        "data": {
            "object": {
                "id": "pay_1",
                "status": "paid",
                "amount": 1050,
                "currency": "gbp",
                "reference": "INV-42",
            }
        },
    }
    event.update(top)
    return json.dumps(event).encode()


def with_object(**fields: Any) -> bytes:
    obj = {"id": "pay_1", "currency": "gbp"}
    obj.update(fields)
    return body(data={"object": obj})


def normalize(payload: bytes, made: Adapter | None = None, **settings: Any) -> CanonicalEvent:
    source = msgspec.structs.replace(SETTINGS, **settings) if settings else SETTINGS
    return (made or adapter()).normalize(payload, {}, source, NOW)


def invalid(payload: bytes, made: Adapter | None = None, **settings: Any) -> InvalidPayload:
    with pytest.raises(InvalidPayload) as caught:
        normalize(payload, made, **settings)
    return caught.value


# Fields.


def test_every_field_lands_in_the_canonical_event() -> None:
    event = normalize(body())
    assert event.type == "payment.succeeded"
    assert event.providertype == "payment.completed"
    assert event.providerid == "evt_1"
    assert event.id == canonical_event_id("ledgerly-main", "evt_1")
    assert event.subject == "pay_1"
    assert event.time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event.data.id == "pay_1"
    assert event.data.kind == "payment"
    assert event.data.status == "succeeded"
    assert event.data.provider_status == "paid"
    assert event.data.amount is not None
    assert (event.data.amount.value, event.data.amount.currency) == ("10.50", "GBP")
    assert event.data.reference == "INV-42"
    assert event.data.account is None
    assert bytes(event.data.provider_payload) == body()


def test_a_field_that_finds_nothing_is_null() -> None:
    event = normalize(json.dumps({"type": "payment.completed", "id": "e"}).encode())
    assert event.subject is msgspec.UNSET
    assert event.time == NOW
    assert event.data.amount is None
    assert event.data.provider_status is None


def test_null_or_a_scalar_on_the_way_is_nothing_found() -> None:
    for data in (None, "x", 3, [1, 2]):
        assert normalize(body(data=data)).subject is msgspec.UNSET


def test_account_events_carry_the_account_block() -> None:
    payload = body(
        type="account.opened",
        data={"object": {"id": "acc_1", "holder": "Ada", "account": {"number": "1234"}}},
    )
    event = normalize(payload)
    assert event.type == "account.created"
    assert event.data.account is not None
    assert event.data.account.number == "1234"
    # `account.name || holder`: the first that is not null or empty.
    assert event.data.account.name == "Ada"


def test_header_fields_read_request_headers() -> None:
    made = adapter(event={"type": "header:X-Event-Type", "id": "header:X-Event-Id"})
    payload = b'{"data": {"object": {"id": "pay_9"}}}'
    headers = {"x-event-type": "payment.failed", "x-event-id": "del_7"}
    event = made.normalize(payload, headers, SETTINGS, NOW)
    assert (event.type, event.providerid, event.subject) == ("payment.failed", "del_7", "pay_9")
    with pytest.raises(InvalidPayload) as caught:
        made.normalize(payload, {}, SETTINGS, NOW)
    assert caught.value.path == "header:X-Event-Type"


def test_any_jmespath_is_read_by_its_interpreter() -> None:
    made = adapter(
        event={"amount": "data.lines[0].amount", "status": "join('-', data.tags)"},
    )
    payload = body(data={"lines": [{"amount": 250}], "tags": ["a", "b"]})
    event = normalize(payload, made)
    assert event.data.amount is None  # no currency expression finds one, nor the source
    assert normalize(payload, made, currency="EUR").data.amount.value == "2.50"  # type: ignore[union-attr]
    assert event.data.provider_status == "a-b"


def test_jmespath_functions_count_json_fractions_as_numbers() -> None:
    made = adapter(
        event={
            "amount": "sum(data.lines[].amount)",
            "amount_unit": "major",
            "status": "to_string(max_by(data.lines, &amount).amount)",
            "reference": "type(data.lines[0].amount)",
        }
    )
    payload = (
        b'{"type": "payment.completed", "data": {"lines": [{"amount": 1.10}, {"amount": 2.25}]}}'
    )
    event = normalize(payload, made, currency="EUR")
    assert event.data.amount is not None
    assert event.data.amount.value == "3.35"
    assert (event.data.provider_status, event.data.reference) == ("2.25", "number")


def test_a_jmespath_function_on_the_wrong_type_finds_nothing() -> None:
    made = adapter(event={"status": "join('-', data.tags)"})
    assert normalize(body(data={"tags": 3}), made).data.provider_status is None


def test_integer_ids_and_types_are_written_out() -> None:
    event = normalize(body(id=12345, type=3021))
    assert (event.providerid, event.providertype, event.type) == ("12345", "3021", "ledgerly.3021")


@pytest.mark.parametrize("value", [{"a": 1}, [1], True, 1.5])
def test_a_text_field_of_another_type_is_invalid_with_its_path(value: object) -> None:
    error = invalid(with_object(status=value))
    assert error.path == "$.data.object.status"
    assert error.reason.startswith("expected a string, got")


# Money.


@pytest.mark.parametrize(
    ("amount", "value"),
    [(1050, "10.50"), ("1050", "10.50"), (1050.0, "10.50"), (-5, "-0.05"), (0, "0.00")],
)
def test_minor_units_from_numbers_and_digit_strings(amount: object, value: str) -> None:
    money = normalize(with_object(amount=amount)).data.amount
    assert money is not None
    assert money.value == value


@pytest.mark.parametrize(
    ("amount", "value"),
    [('"12.10"', "12.10"), ("12.10", "12.10"), ("12", "12"), ('"007.5"', "7.5"), ("1e3", "1000")],
)
def test_major_units_keep_the_providers_digits(amount: str, value: str) -> None:
    made = adapter(event={"amount_unit": "major"})
    text = '{"type": "payment.completed", "data": {"object": {"currency": "EUR", "amount": %s}}}'
    payload = (text % amount).encode()
    money = normalize(payload, made).data.amount
    assert money is not None
    assert money.value == value


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        ({"value": 1}, "expected a number or a decimal string, got an object"),
        (True, "expected a number or a decimal string, got a boolean"),
        ("ten", "expected a number or a decimal string"),
        ("10.5", "an amount in minor units must be a whole number"),
        (10.5, "an amount in minor units must be a whole number"),
        (1e300, "amount has more than 38 digits"),
    ],
)
def test_an_amount_that_is_not_money_is_invalid_with_its_path(amount: object, reason: str) -> None:
    error = invalid(with_object(amount=amount))
    assert error.path == "$.data.object.amount"
    assert error.reason == reason


def test_currency_from_the_source_when_the_body_has_none() -> None:
    payload = body(data={"object": {"amount": 500}})
    assert normalize(payload).data.amount is None
    money = normalize(payload, currency="JPY").data.amount
    assert money is not None
    assert (money.value, money.currency) == ("500", "JPY")


def test_a_currency_that_is_not_a_code_is_invalid() -> None:
    error = invalid(with_object(amount=1, currency=7))
    assert (error.path, error.reason) == (
        "$.data.object.currency",
        "expected a currency code, got a number",
    )
    error = invalid(with_object(amount=1, currency="not a code"))
    assert error.path == "$.data.object.amount"


def test_balance_has_the_amounts_unit_and_currency() -> None:
    money = normalize(with_object(balance=250000)).data.balance
    assert money is not None
    assert (money.value, money.currency) == ("2500.00", "GBP")


# Times.


@pytest.mark.parametrize(
    "created",
    [
        1767323045,
        "1767323045",
        1767323045000,
        "1767323045000",
        "2026-01-02T03:04:05Z",
        "2026-01-02T04:04:05+01:00",
        1767323045.0,
    ],
)
def test_times_in_any_form(created: object) -> None:
    assert normalize(body(created_at=created)).time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("created", ["yesterday", {"t": 1}, True, "9" * 30])
def test_a_time_that_is_not_one_is_invalid_with_its_path(created: object) -> None:
    assert invalid(body(created_at=created)).path == "$.created_at"


# Ids.


def test_without_an_id_the_key_is_the_sha256_of_the_event() -> None:
    made = adapter(LEDGERLY.replace('id = "id"\n', ""))
    payload = body()
    event = normalize(payload, made)
    assert event.providerid is msgspec.UNSET
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    assert event.id == canonical_event_id("ledgerly-main", digest)
    assert normalize(b" " + payload + b"\n", made).id == event.id
    assert normalize(body(created_at=1), made).id != event.id


def test_an_id_expression_that_finds_nothing_falls_back_to_the_sha256() -> None:
    event = normalize(body(id=None))
    assert event.providerid is msgspec.UNSET
    assert event.id == canonical_event_id(
        "ledgerly-main", "sha256:" + hashlib.sha256(body(id=None)).hexdigest()
    )


# Bodies that cannot be read.


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "the body is empty"),
        (b"not json", "JSON is malformed"),
        (b'{"type": "\xff"}', "the body is not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
)
def test_a_body_that_is_not_json_is_invalid(payload: bytes, reason: str) -> None:
    error = invalid(payload)
    assert error.path == "$"
    assert reason in error.reason


@pytest.mark.parametrize("payload", [b"{}", b"[]", b"3", b'{"type": ""}', b'{"type": null}'])
def test_a_body_without_a_type_is_invalid(payload: bytes) -> None:
    error = invalid(payload)
    assert error.path == "$.type"
    assert error.reason == "the event type is missing"


def test_an_unmapped_type_is_accepted_as_the_adapters() -> None:
    event = normalize(body(type="charge.captured"))
    assert (event.type, event.data.kind, event.data.status) == (
        "ledgerly.charge.captured",
        "unmapped",
        None,
    )


# Types.


def test_globs_keep_the_rest_of_the_type() -> None:
    assert normalize(body(type="payout.succeeded")).type == "transfer.succeeded"
    # The rest makes no canonical type: unmapped, never an invented one.
    assert normalize(body(type="payout.in_transit")).type == "ledgerly.payout.in_transit"


def test_exact_wins_over_prefix_and_longer_over_shorter() -> None:
    made = adapter(
        types={
            "charge.*": "payment.created",
            "charge.refund.*": "payment.refunded",
            "charge.refund.lost": "payment.failed",
            "*": "system.*",
        }
    )
    mapped = {
        t: normalize(body(type=t), made).type
        for t in ("charge.x", "charge.refund.y", "charge.refund.lost", "other.thing")
    }
    assert mapped == {
        "charge.x": "payment.created",
        "charge.refund.y": "payment.refunded",
        "charge.refund.lost": "payment.failed",
        "other.thing": "system.other.thing",
    }


# each: several events in one body.

BATCH = """
[signature]
scheme = "hmac"
header = "Webhook-Signature"

[event]
each = "events"
id = "id"
type = "join('.', [resource_type, action])"
time = "created_at"
subject = "links.payment"

[types]
"payments.confirmed" = "payment.succeeded"
"payments.failed" = "payment.failed"
"""

BATCH_BODY = (
    b'{"events": [ {"id": "EV1", "resource_type": "payments", "action": "confirmed",'
    b' "created_at": "2026-01-02T03:00:00.000Z", "links": {"payment": "PM1"}},'
    b'{"id":"EV2","resource_type":"payments","action":"failed","links":{"payment":"PM2"}} ]}'
)


def test_each_reads_every_event_of_the_body() -> None:
    made = adapter(BATCH, "gocardless")
    assert made.batch
    events = made.normalize_all(BATCH_BODY, {}, SETTINGS, NOW, "signature")
    assert [(e.type, e.providerid, e.subject) for e in events] == [
        ("payment.succeeded", "EV1", "PM1"),
        ("payment.failed", "EV2", "PM2"),
    ]
    assert events[0].id != events[1].id
    assert {e.verification for e in events} == {"signature"}
    assert json.loads(bytes(events[1].data.provider_payload))["id"] == "EV2"


def test_each_event_is_its_own_json_exactly_as_sent() -> None:
    made = adapter(BATCH.replace("join('.', [resource_type, action])", "kind"), "batch")
    payload = b'{"events": [ {"kind": "payments.failed", "n": 1.50} , {"kind": "x"}]}'
    events = made.normalize_all(payload, {}, SETTINGS, NOW)
    assert bytes(events[0].data.provider_payload) == b'{"kind": "payments.failed", "n": 1.50}'


def test_each_without_ids_keys_every_event_by_its_own_json() -> None:
    made = adapter(BATCH.replace('id = "id"\n', ""), "batch")
    first = made.normalize_all(BATCH_BODY, {}, SETTINGS, NOW)
    second = b'{"id":"EV2","resource_type":"payments","action":"failed","links":{"payment":"PM2"}}'
    assert second in BATCH_BODY
    again = made.normalize_all(b'{"events":[' + second + b"]}", {}, SETTINGS, NOW)
    assert first[1].id == again[0].id  # the same event in another batch is the same event
    assert first[0].providerid is msgspec.UNSET


@pytest.mark.parametrize(
    ("payload", "path", "reason"),
    [
        (b"{}", "$.events", "expected a list of events, got null"),
        (b'{"events": {"id": 1}}', "$.events", "expected a list of events, got an object"),
        (b'{"events": []}', "$.events", "the list of events is empty"),
        (b'{"events": [{"type": "payments.failed"}, 3]}', "$.events[1].type", None),
    ],
)
def test_each_says_what_is_wrong_with_the_list(
    payload: bytes, path: str, reason: str | None
) -> None:
    made = adapter(BATCH.replace("join('.', [resource_type, action])", "type"), "batch")
    with pytest.raises(InvalidPayload) as caught:
        made.normalize_all(payload, {}, SETTINGS, NOW)
    assert caught.value.path == path
    if reason is not None:
        assert caught.value.reason == reason


def test_normalize_takes_a_batch_of_one_but_not_of_two() -> None:
    made = adapter(BATCH, "gocardless")
    one = b'{"events": [{"id": "EV1", "resource_type": "payments", "action": "confirmed"}]}'
    assert made.normalize(one, {}, SETTINGS, NOW).providerid == "EV1"
    with pytest.raises(InvalidPayload, match="carries 2 events"):
        made.normalize(BATCH_BODY, {}, SETTINGS, NOW)


def test_a_single_event_adapter_normalizes_all_as_one() -> None:
    made = adapter()
    assert not made.batch
    assert made.normalize_all(body(), {}, SETTINGS, NOW) == [
        made.normalize(body(), {}, SETTINGS, NOW)
    ]


def test_each_through_any_jmespath() -> None:
    made = adapter(BATCH.replace('each = "events"', 'each = "data.events[?live]"'), "batch")
    payload = (
        b'{"data": {"events": [{"live": true, "id": "A", "resource_type": "payments",'
        b' "action": "failed"}, {"live": false, "id": "B"}]}}'
    )
    events = made.normalize_all(payload, {}, SETTINGS, NOW)
    assert [e.providerid for e in events] == ["A"]


# The generated Structs and the expressions agree.


@pytest.mark.parametrize(
    "payload",
    [
        body(),
        body(
            type="account.opened",
            data={"object": {"account": {"name": "", "iban": "GB1"}, "holder": "H"}},
        ),
        body(data=None),
        body(data={"object": None}),
        body(data={"object": {"amount": "12", "currency": "eur", "balance": 1.0}}),
        b'{"type": "payment.completed", "type": "payment.failed"}',
    ],
)
def test_generated_structs_and_expressions_give_the_same_event(payload: bytes) -> None:
    fast = normalize(payload)
    slow = normalize(payload, general(adapter()))
    assert encode_event(fast) == encode_event(slow)


def test_a_finfusion_like_description_matches_the_finfusion_code() -> None:
    made = adapter(
        """
        [signature]
        scheme = "hmac"
        header = "x-finfusion-signature"
        format = "t={timestamp},v1={signature}"
        signed = "{timestamp}.{body}"
        [event]
        id = "id"
        type = "type"
        time = "created"
        subject = "data.object.id"
        status = "data.object.status"
        amount = "data.object.amount"
        currency = "data.object.currency"
        reference = "data.object.reference"
        balance = "data.object.balance"
        [types]
        "payment.succeeded" = "payment.succeeded"
        """,
        "finfusion",
    )
    payload = (
        b'{"id":"evt_123456789","object":"event","type":"payment.succeeded","created":1634567890,'
        b'"livemode":false,"data":{"object":{"id":"pay_123456789","object":"payment",'
        b'"amount":1000,"currency":"usd","status":"succeeded","created":1634567890}}}'
    )
    settings = SourceSettings(name="ff", adapter="finfusion", secrets=(Secret("whsec_x"),))
    ours = made.normalize(payload, {}, settings, NOW)
    theirs = FINFUSION.normalize(payload, {}, settings, NOW)
    assert encode_event(ours) == encode_event(theirs)
    assert made.sign(payload, "whsec_x", NOW) == FINFUSION.sign(payload, "whsec_x", NOW)  # type: ignore[misc]


# Samples.


@pytest.mark.parametrize(
    ("requested", "provider_type", "canonical"),
    [
        (None, "payment.completed", "payment.succeeded"),
        ("payment.failed", "payment.failed", "payment.failed"),
        ("payment.succeeded", "payment.completed", "payment.succeeded"),
        ("transfer.failed", "payout.failed", "transfer.failed"),
        ("charge.other", "charge.other", "ledgerly.charge.other"),
    ],
)
def test_a_sample_reads_back_as_the_type_asked_for(
    requested: str | None, provider_type: str, canonical: str
) -> None:
    made = adapter()
    assert made.sample is not None
    sample = made.sample(requested, NOW)
    event = made.normalize(sample, {}, SETTINGS, NOW)
    assert (event.providertype, event.type) == (provider_type, canonical)
    assert event.time == NOW
    assert event.data.amount is not None
    assert event.subject is not msgspec.UNSET
    assert event.providerid is not msgspec.UNSET
    assert made.sample(requested, NOW) != sample  # fresh ids every time


def test_a_batch_sample_is_a_list_of_one() -> None:
    made = adapter(BATCH.replace("join('.', [resource_type, action])", "type"), "batch")
    assert made.sample is not None
    events = made.normalize_all(made.sample("payment.failed", NOW), {}, SETTINGS, NOW)
    assert [e.type for e in events] == ["payment.failed"]


def test_no_sample_when_the_type_is_not_in_the_body() -> None:
    made = adapter(event={"type": "header:X-Event-Type"})
    assert made.sample is not None
    with pytest.raises(
        SampleError, match=r"a sample body cannot carry .payment.completed. \(samples of: none\)"
    ):
        made.sample(None, NOW)


# What the adapter says about itself.


def test_a_described_adapter_describes_itself() -> None:
    made = adapter()
    assert (made.name, made.origin, made.scheme, made.signed) == (
        "ledgerly",
        "config",
        "hmac",
        True,
    )
    assert made.signature_headers == ("x-ledgerly-signature",)
    assert not made.signs_url
    unsigned = adapter(
        LEDGERLY.split("[event]")[0].split("[signature]")[0]
        + '[signature]\nscheme = "none"\n[event]'
        + LEDGERLY.split("[event]")[1]
    )
    assert (unsigned.scheme, unsigned.signed, unsigned.sign) == ("none", False, None)


def test_builtins_keep_their_defaults() -> None:
    assert (FINFUSION.origin, FINFUSION.scheme, FINFUSION.batch, FINFUSION.sample) == (
        "builtin",
        "hmac",
        False,
        None,
    )


def test_a_scheme_that_signs_the_url_signs_for_a_source() -> None:
    made = adapter(signature={"format": "{signature}", "signed": "{url}{body}"})
    assert made.signs_url
    settings = msgspec.structs.replace(SETTINGS, public_url="https://hooks.example.com/w/l")
    headers = made.sign_for_source(b"{}", "s3cret", NOW, settings)
    from adapters.request import InboundRequest

    assert made.verify(InboundRequest(body=b"{}", headers=headers), settings, NOW) == "signature"
    assert made.sign is not None
    with pytest.raises(ValueError, match="public_url"):
        made.sign(b"{}", "s3cret", NOW)

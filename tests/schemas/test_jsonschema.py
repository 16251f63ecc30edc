"""The checked-in JSON Schema of the canonical event (docs/reference/event.md) is the code's.

It is generated from the Structs by `python -m schemas`; these tests fail when someone changes a
Struct and forgets to regenerate it, and check that real events and the schema agree.
"""

from __future__ import annotations

import copy
import difflib
import json
from typing import Any

import jsonschema
import msgspec
import pytest

import schemas.jsonschema
from adapters.registry import ADAPTERS
from schemas.event import CanonicalEvent, decode_event, encode_event
from schemas.jsonschema import SCHEMA_PATH, canonical_event_schema, render_schema
from tests.support import NOW, settings_for

VALIDATOR = jsonschema.Draft202012Validator
# One realistic webhook per adapter, with money, accounts and times where the provider has them.
SAMPLE_BODIES: dict[str, bytes] = {
    "finaegis": (
        b'{"event":"account.balance_updated","timestamp":"2025-01-14T10:30:00+00:00",'
        b'"account_uuid":"9f1c","account_name":"Ops","balance":"1250.50","currency":"eur",'
        b'"url":"https:\\/\\/example.test\\/x"}'
    ),
    "finexer": (
        b'{"id":"evt_fx_1","object":"event","created_at":"2020-01-30T12:44:55Z",'
        b'"type":"bank_account.import","data":{"object":{"id":"ba_1","object":"bank_account",'
        b'"account_number":"12345678","name":"Main","iban":"GB33BUKB20201555555555",'
        b'"balance":"1000.25","currency":"GBP"}}}'
    ),
    "finfusion": (
        b'{"id":"evt_123456789","type":"payment.succeeded","created":1634567890,'
        b'"data":{"object":{"id":"pay_123456789","amount":1000,"currency":"usd",'
        b'"status":"succeeded"}}}'
    ),
    "finchpay": (
        b'{"id":"tx_1","status":"COMPLETE","partner_key":"pk","amount_from":"250.5",'
        b'"asset_from":"EUR","amount_to":"0.00412","asset_to":"BTC",'
        b'"event_time":"2023-10-11T10:14:14.491786009Z","external_id":"ext-1"}'
    ),
    "account_lifecycle": (
        b'{"message":"Account credited","identifier":"ACCOUNT_CREDITED","code":3023,'
        b'"accountNumber":"0123456789","accountName":"Jane","amount":150.75,"balance":2000,'
        b'"transactionId":"trx_1","transactionRef":"ref_1","iban":"NG00PRUN0123456789"}'
    ),
}

# One webhook per adapter of a type no table knows.
UNMAPPED_BODIES: dict[str, bytes] = {
    "finaegis": b'{"event":"bridge.quote_created"}',
    "finexer": b'{"id":"evt_2","type":"mandate.created"}',
    "finfusion": b'{"id":"evt_2","type":"payout.paid"}',
    "finchpay": b'{"id":7,"status":"NEW_STATUS"}',
    "account_lifecycle": b'{"identifier":"CARD_ISSUED"}',
}


def test_every_builtin_adapter_has_its_bodies_here() -> None:
    # A new built-in fails here until its sample and unmapped bodies are written.
    assert set(SAMPLE_BODIES) == set(ADAPTERS)
    assert set(UNMAPPED_BODIES) == set(ADAPTERS)


def checked_in_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def validator() -> jsonschema.Draft202012Validator:
    return VALIDATOR(checked_in_schema(), format_checker=VALIDATOR.FORMAT_CHECKER)


def sample_event(adapter: str) -> CanonicalEvent:
    settings = settings_for(adapter, currency="GBP")
    return ADAPTERS[adapter].normalize(
        SAMPLE_BODIES[adapter], {"x-webhook-delivery": "d-1"}, settings, NOW, "signature"
    )


def sample_event_json(adapter: str = "finfusion") -> dict[str, Any]:
    document: dict[str, Any] = json.loads(encode_event(sample_event(adapter)))
    return document


# The checked-in file is the generated one.


def _what_matters(node: Any) -> Any:
    """A schema with each description's whitespace collapsed: structure, types, constraints and
    words are compared, line breaks and indentation (which library versions change) are not."""
    if isinstance(node, dict):
        return {
            key: " ".join(value.split())
            if key == "description" and isinstance(value, str)
            else _what_matters(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_what_matters(item) for item in node]
    return node


def test_checked_in_schema_is_up_to_date_with_the_structs() -> None:
    checked_in = SCHEMA_PATH.read_text(encoding="utf-8")
    generated = render_schema()
    diff = "".join(
        difflib.unified_diff(
            checked_in.splitlines(keepends=True),
            generated.splitlines(keepends=True),
            fromfile=str(SCHEMA_PATH),
            tofile="render_schema()",
        )
    )
    assert _what_matters(json.loads(checked_in)) == _what_matters(json.loads(generated)), (
        "schemas/canonical-event.schema.json is out of date with the Structs in schemas/; "
        f"run `python -m schemas` to regenerate it and commit the result.\n{diff}"
    )


def test_descriptions_are_rendered_without_docstring_indentation() -> None:
    # msgspec 0.19 kept a docstring's indentation, 0.23 strips it: ours is the same under both.
    def descriptions(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [v for k, v in node.items() if k == "description" and isinstance(v, str)]
            return found + [d for value in node.values() for d in descriptions(value)]
        if isinstance(node, list):
            return [d for item in node for d in descriptions(item)]
        return []

    found = descriptions(canonical_event_schema())
    assert found
    assert not [d for d in found if "\n " in d], "indented description lines"


def test_drift_check_ignores_only_whitespace() -> None:
    schema = checked_in_schema()
    reflowed = copy.deepcopy(schema)
    event = reflowed["$defs"]["CanonicalEvent"]
    event["description"] = event["description"].replace("\n", "\n    ")
    assert _what_matters(reflowed) == _what_matters(schema)
    event["properties"]["id"]["minLength"] = 1 + event["properties"]["id"].get("minLength", 0)
    assert _what_matters(reflowed) != _what_matters(schema)


def test_drift_check_notices_a_changed_struct(monkeypatch: pytest.MonkeyPatch) -> None:
    # The guard above is only worth something if a Struct change shows in render_schema().
    class ChangedEvent(CanonicalEvent, frozen=True, kw_only=True, forbid_unknown_fields=True):
        newattribute: str = "x"

    monkeypatch.setattr(schemas.jsonschema, "CanonicalEvent", ChangedEvent)
    assert _what_matters(json.loads(render_schema())) != _what_matters(checked_in_schema())


def test_rendering_is_deterministic() -> None:
    assert render_schema() == render_schema()
    assert render_schema().endswith("}\n")


def test_checked_in_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = checked_in_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    VALIDATOR.check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is VALIDATOR


def test_schema_dict_matches_the_checked_in_file() -> None:
    assert canonical_event_schema() == checked_in_schema()


# Real events validate.


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_encoded_event_of_every_adapter_validates_against_the_schema(adapter: str) -> None:
    event = sample_event(adapter)
    encoded = encode_event(event)
    validator().validate(json.loads(encoded))
    assert decode_event(encoded) == event


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_unmapped_event_of_every_adapter_validates_against_the_schema(adapter: str) -> None:
    unmapped = UNMAPPED_BODIES[adapter]
    event = ADAPTERS[adapter].normalize(unmapped, {}, settings_for(adapter), NOW)
    document = json.loads(encode_event(event))
    validator().validate(document)
    assert document["data"]["kind"] == "unmapped"
    assert document["type"].startswith(f"{adapter}.")


def test_sample_event_has_the_contracts_example_shape() -> None:
    document = sample_event_json("finfusion")
    assert document["data"]["amount"] == {"value": "10.00", "currency": "USD"}
    assert document["time"] == "2021-10-18T14:38:10Z"
    assert document["verification"] == "signature"
    assert next(iter(document)) == "specversion"
    assert list(document)[-1] == "data"
    # docs/reference/event.md's example, field for field and in its order.
    assert list(document["data"]) == [
        "kind",
        "id",
        "status",
        "provider_status",
        "amount",
        "counter_amount",
        "account",
        "balance",
        "reference",
        "occurred_at",
        "provider_payload",
    ]
    assert (document["data"]["status"], document["data"]["provider_status"]) == (
        "succeeded",
        "succeeded",
    )


# The schema refuses what the contract forbids.


def _invalid(document: dict[str, Any]) -> list[str]:
    return [error.message for error in validator().iter_errors(document)]


def test_schema_rejects_a_float_amount() -> None:
    document = sample_event_json()
    document["data"]["amount"]["value"] = 10.0
    assert _invalid(document)


def test_schema_rejects_a_float_looking_amount_string() -> None:
    document = sample_event_json()
    document["data"]["amount"]["value"] = "1e3"
    assert _invalid(document)


def test_schema_rejects_a_lower_case_currency() -> None:
    document = sample_event_json()
    document["data"]["amount"]["currency"] = "usd"
    assert _invalid(document)


def test_schema_rejects_a_null_subject() -> None:
    document = sample_event_json()
    assert "subject" in document
    document["subject"] = None
    assert _invalid(document)


def test_schema_rejects_a_null_providerid() -> None:
    document = sample_event_json()
    document["providerid"] = None
    assert _invalid(document)


def test_schema_allows_subject_and_providerid_to_be_absent() -> None:
    document = sample_event_json()
    del document["subject"], document["providerid"]
    assert not _invalid(document)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("specversion",), "0.3"),
        (("id",), "evt_123"),
        (("type",), "Payment.succeeded"),
        (("verification",), "password"),
        (("provider",), "Fin-Fusion"),
        (("data", "kind"), "refund"),
        (("data", "amount"), {"value": "10.00"}),
        (("data", "amount"), {"value": "10.00", "currency": "USD", "extra": 1}),
        (("data", "occurred_at"), 1634567890),
        (("source",), ""),
    ],
)
def test_schema_rejects_other_contract_violations(where: tuple[str, ...], value: object) -> None:
    document = sample_event_json()
    target = document
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    assert _invalid(document)


@pytest.mark.parametrize("field", ["reference", "status", "provider_status"])
def test_schema_rejects_a_missing_data_field(field: str) -> None:
    document = sample_event_json()
    del document["data"][field]
    assert _invalid(document)


@pytest.mark.parametrize("field", ["status", "provider_status"])
def test_schema_allows_a_null_status_but_only_a_string_otherwise(field: str) -> None:
    document = sample_event_json()
    document["data"][field] = None
    assert not _invalid(document)
    document["data"][field] = 1
    assert _invalid(document)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["data"]["amount"].update(value=10.0),
        lambda d: d["data"]["amount"].update(currency="usd"),
        lambda d: d.update(subject=None),
    ],
    ids=["float amount", "lower-case currency", "null subject"],
)
def test_decoder_agrees_with_the_schema_on_what_is_invalid(mutate: Any) -> None:
    document = copy.deepcopy(sample_event_json())
    mutate(document)
    assert _invalid(document)
    with pytest.raises(msgspec.ValidationError):
        decode_event(json.dumps(document).encode())

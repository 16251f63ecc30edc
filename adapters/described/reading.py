"""Reading a described provider's events: the compiled expressions applied to a decoded body.

docs/reference/providers.md. The body is decoded once into Python values, JSON fractions as Decimal
so that money stays exact; each field is found by its expression and turned into a canonical value
with the same helpers the built-ins use (schemas/money.py, schemas/timestamps.py). A field whose
expression finds nothing is null; a value of the wrong shape (an object where an amount should be)
is InvalidPayload with the field's JSON path, as a built-in's Struct would say; a body that is not
JSON or has no type is InvalidPayload too (422, quarantined).

With `each`, the body carries a list of events: every expression then applies to each element,
and the element's own JSON is its `provider_payload` and, without an `id` expression (or when it
finds none), the source of its idempotency key. The JSON is the element's bytes exactly as sent
when `each` is a field path (`events`), and the element re-encoded when it is any other JMESPath
(whose result need not be a slice of the body); either way the same body always gives the same
keys.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

import msgspec

from adapters.base import Facts, account_event_account
from adapters.decoding import payload_bytes
from adapters.described.expressions import FieldExpression
from adapters.described.structs import EventStructs
from adapters.described.type_table import TypeTable
from adapters.errors import InvalidPayload
from adapters.source import SourceSettings
from schemas.money import MAX_AMOUNT_DIGITS, Money, MoneyError, money_from_major, money_from_minor
from schemas.timestamps import TimestampError, parse_timestamp, utc_from_unix

__all__ = ["FIELD_NAMES", "AmountUnit", "EventFields", "EventReader"]

AmountUnit = Literal["minor", "major"]

# JSON fractions as Decimal: "12.10" stays 12.10, and 0.1 is one tenth, not a float near it.
_decoder = msgspec.json.Decoder(float_hook=Decimal)
_element_encoder = msgspec.json.Encoder(decimal_format="number")
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")
# Unix times this large are milliseconds: 1e11 s is the year 5138, 1e11 ms is March 1973.
_MILLISECONDS_FROM = Decimal(100_000_000_000)
_UNIX_DIGITS = re.compile(r"-?[0-9]{1,20}")

# The event's fields in the order EventReader keeps their values.
FIELD_NAMES = (
    "type",
    "id",
    "time",
    "subject",
    "status",
    "amount",
    "currency",
    "reference",
    "account_number",
    "account_name",
    "account_iban",
    "balance",
)
(
    _TYPE,
    _ID,
    _TIME,
    _SUBJECT,
    _STATUS,
    _AMOUNT,
    _CURRENCY,
    _REFERENCE,
    _ACCOUNT_NUMBER,
    _ACCOUNT_NAME,
    _ACCOUNT_IBAN,
    _BALANCE,
) = range(len(FIELD_NAMES))


@dataclass(frozen=True, slots=True)
class EventFields:
    """The compiled `[event]` table; None where the description names no expression."""

    type: FieldExpression
    each: FieldExpression | None = None
    id: FieldExpression | None = None
    time: FieldExpression | None = None
    subject: FieldExpression | None = None
    status: FieldExpression | None = None
    amount: FieldExpression | None = None
    amount_unit: AmountUnit = "minor"
    currency: FieldExpression | None = None
    reference: FieldExpression | None = None
    account_number: FieldExpression | None = None
    account_name: FieldExpression | None = None
    account_iban: FieldExpression | None = None
    balance: FieldExpression | None = None


class EventReader:
    """Facts from a body, by a description's fields and type table.

    The values are found by generated Structs where the expressions allow (structs.py: what a
    built-in costs), else by the expressions over the decoded body; both give the same values.
    """

    __slots__ = ("_each", "_slots", "_structs", "_types", "_unit")

    def __init__(self, fields: EventFields, types: TypeTable) -> None:
        self._slots: tuple[FieldExpression | None, ...] = tuple(
            getattr(fields, name) for name in FIELD_NAMES
        )
        self._each = fields.each
        self._unit = fields.amount_unit
        self._types = types
        self._structs = EventStructs.build(self._slots, fields.each)

    def read(
        self,
        body: bytes,
        headers: Mapping[str, str],
        settings: SourceSettings,
        received_at: datetime,
    ) -> Facts:
        """The facts of a body that is one event."""
        text = _json_text(body)
        values = None if self._structs is None else self._structs.values(text, headers)
        if values is None:
            values = self._found(_decode(text, "$"), headers)
        return self._facts(values, "$", text, settings)

    def read_all(
        self,
        body: bytes,
        headers: Mapping[str, str],
        settings: SourceSettings,
        received_at: datetime,
    ) -> list[tuple[Facts, bytes]]:
        """Every event of a body: the list `each` finds, each with its own JSON."""
        each = self._each
        if each is None:
            return [(self.read(body, headers, settings, received_at), body)]
        text = _json_text(body)
        structs = self._structs
        payloads = None if structs is None else structs.events(text)
        if payloads is None:
            return self._read_all_found(text, each, headers, settings)
        if not payloads:
            raise InvalidPayload(each.path, "the list of events is empty")
        read = []
        for index, payload in enumerate(payloads):
            assert structs is not None
            values = structs.values(payload, headers)
            element = f"{each.path}[{index}]"
            if values is None:
                values = self._found(_decode(payload, element), headers)
            read.append((self._facts(values, element, payload, settings), payload))
        return read

    def _read_all_found(
        self,
        text: bytes,
        each: FieldExpression,
        headers: Mapping[str, str],
        settings: SourceSettings,
    ) -> list[tuple[Facts, bytes]]:
        """`read_all` by the expressions over the decoded body; each event re-encoded."""
        events = each.find(_decode(text, "$"), headers)
        if type(events) is not list:
            raise InvalidPayload(each.path, f"expected a list of events, got {_json_kind(events)}")
        if not events:
            raise InvalidPayload(each.path, "the list of events is empty")
        read = []
        for index, event in enumerate(events):
            element = f"{each.path}[{index}]"
            try:
                payload = _element_encoder.encode(event)
            except RecursionError:
                raise InvalidPayload(element, "the JSON is nested too deeply") from None
            facts = self._facts(self._found(event, headers), element, payload, settings)
            read.append((facts, payload))
        return read

    def _found(self, document: object, headers: Mapping[str, str]) -> Sequence[object]:
        return [
            None if expression is None else expression.find(document, headers)
            for expression in self._slots
        ]

    def _facts(
        self, values: Sequence[object], element: str, payload: bytes, settings: SourceSettings
    ) -> Facts:
        """The facts of one event from its fields' values. `payload` is the event's JSON: its
        SHA-256 is the idempotency key when the description has no id (or finds none)."""
        slots = self._slots
        type_expression = slots[_TYPE]
        assert type_expression is not None  # required by the description
        provider_type = _text(values[_TYPE], type_expression, element)
        if provider_type is None:
            raise InvalidPayload(type_expression.path_in(element), "the event type is missing")
        canonical_type = self._types.canonical(provider_type)
        event_id = _text(values[_ID], slots[_ID], element)
        key = event_id or "sha256:" + hashlib.sha256(payload).hexdigest()
        subject = _text(values[_SUBJECT], slots[_SUBJECT], element)
        currency = _currency(values[_CURRENCY], slots[_CURRENCY], element)
        account = None
        # Only an `account.*` event has an account block (account_event_account).
        if canonical_type is not None and canonical_type[:8] == "account.":
            account = account_event_account(
                canonical_type,
                _text(values[_ACCOUNT_NUMBER], slots[_ACCOUNT_NUMBER], element),
                _text(values[_ACCOUNT_NAME], slots[_ACCOUNT_NAME], element),
                _text(values[_ACCOUNT_IBAN], slots[_ACCOUNT_IBAN], element),
            )
        unit = self._unit
        return Facts(
            providertype=provider_type,
            canonical_type=canonical_type,
            idempotency_key=key,
            occurred_at=_time(values[_TIME], slots[_TIME], element),
            subject=subject,
            providerid=event_id,
            object_id=subject,
            provider_status=_text(values[_STATUS], slots[_STATUS], element),
            amount=_money(values[_AMOUNT], slots[_AMOUNT], unit, currency, settings, element),
            account=account,
            balance=_money(values[_BALANCE], slots[_BALANCE], unit, currency, settings, element),
            reference=_text(values[_REFERENCE], slots[_REFERENCE], element),
        )


def _json_text(body: bytes) -> bytes:
    """The body's JSON text, refusing what can never be JSON before any decoding."""
    text = payload_bytes(body)
    if not text:
        raise InvalidPayload("$", "the body is empty")
    # The generated Structs skip what they do not name without checking its strings' UTF-8;
    # the body is kept verbatim in the canonical event, so all of it must be valid text.
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidPayload("$", f"the body is not UTF-8 (byte {error.start})") from None
    return text


def _decode(text: bytes, element: str) -> object:
    """JSON text as Python values, or InvalidPayload saying why it is not JSON."""
    problem: InvalidPayload
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError as error:
        problem = InvalidPayload(element, str(error))
    except RecursionError:
        problem = InvalidPayload(element, "the JSON is nested too deeply")
    raise problem


# --- Values -------------------------------------------------------------------------------------


def _text(value: object, expression: FieldExpression | None, element: str) -> str | None:
    """An id, type or name: a string, or an integer written out (providers use both); an
    empty string is no value. (`expression` is None only where `value` is.)"""
    if value is None or type(value) is str:
        return value or None
    if type(value) is int:
        return str(value)
    raise InvalidPayload(_path(expression, element), f"expected a string, got {_json_kind(value)}")


def _currency(value: object, expression: FieldExpression | None, element: str) -> str | None:
    if value is None or type(value) is str:
        return value or None
    raise InvalidPayload(
        _path(expression, element), f"expected a currency code, got {_json_kind(value)}"
    )


def _time(value: object, expression: FieldExpression | None, element: str) -> datetime | None:
    """Unix seconds, unix milliseconds or ISO 8601, told apart by their form."""
    if value is None:
        return None
    try:
        number: int | Decimal
        if isinstance(value, str):
            if not _UNIX_DIGITS.fullmatch(value):
                return parse_timestamp(value)
            number = int(value)
        elif isinstance(value, int | Decimal) and not isinstance(value, bool):
            number = value
        else:
            raise TimestampError(f"expected a time, got {_json_kind(value)}")
        if isinstance(number, Decimal) and not number.is_finite():
            raise TimestampError("unix time is not a finite number")
        if number >= _MILLISECONDS_FROM or number <= -_MILLISECONDS_FROM:
            return utc_from_unix(Decimal(number) / 1000)
        return utc_from_unix(number)
    except TimestampError as error:
        reason = str(error)
    raise InvalidPayload(_path(expression, element), reason)


def _money(
    value: object,
    expression: FieldExpression | None,
    unit: AmountUnit,
    currency: str | None,
    settings: SourceSettings,
    element: str,
) -> Money | None:
    """Money from a number or a decimal string, in the description's unit; null without an
    amount or any currency, as for the built-ins."""
    if value is None:
        return None
    code = currency or settings.currency
    try:
        if unit == "minor":
            units = _minor_units(value)
            return None if code is None else money_from_minor(units, code)
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        if not isinstance(value, str | Decimal):
            raise MoneyError(f"expected a number or a decimal string, got {_json_kind(value)}")
        return None if code is None else money_from_major(value, code)
    except MoneyError as error:
        # The path is worked out only here: a good amount does not pay for it.
        raise InvalidPayload(_path(expression, element), str(error)) from None


def _path(expression: FieldExpression | None, element: str) -> str:
    return element if expression is None else expression.path_in(element)


def _minor_units(value: object) -> int:
    """A whole number of minor units from an integer, an integral number or a digit string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        # Checked before int(): Decimal("1e999999999") must never be written out.
        if not value.is_finite() or value.adjusted() >= MAX_AMOUNT_DIGITS:
            raise MoneyError(f"amount has more than {MAX_AMOUNT_DIGITS} digits")
        if value != value.to_integral_value():
            raise MoneyError("an amount in minor units must be a whole number")
        return int(value)
    if isinstance(value, str):
        if len(value) <= MAX_AMOUNT_DIGITS + 1 and _WHOLE_NUMBER.fullmatch(value):
            return int(value)
        if len(value) <= 2 * MAX_AMOUNT_DIGITS and _is_decimal(value):
            raise MoneyError("an amount in minor units must be a whole number")
        raise MoneyError("expected a number or a decimal string")
    raise MoneyError(f"expected a number or a decimal string, got {_json_kind(value)}")


def _is_decimal(text: str) -> bool:
    whole, dot, fraction = text.lstrip("-").partition(".")
    return (
        whole.isascii()
        and whole.isdigit()
        and (not dot or (fraction.isascii() and fraction.isdigit()))
    )


def _json_kind(value: object) -> str:
    """What JSON calls the type of a decoded value, for "expected X, got Y"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | Decimal | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"

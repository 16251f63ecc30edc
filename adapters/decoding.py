"""From a provider's bytes to its typed Structs, and from their fields to canonical values.

Every failure becomes an InvalidPayload with the JSON path of the offending value, the way
msgspec reports it (`$.data.object.amount`), so a 422 tells the provider's integrator exactly what
to fix and a quarantined payload says why it is there.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

import msgspec

from adapters.errors import InvalidPayload
from adapters.source import SourceSettings
from schemas.money import Money, MoneyError, money_from_major, money_from_minor
from schemas.timestamps import TimestampError, parse_timestamp

__all__ = [
    "body_digest",
    "decode_payload",
    "identifier",
    "major_money",
    "minor_money",
    "minor_or_major_money",
    "payload_bytes",
    "timestamp",
]

_UTF8_BOM = b"\xef\xbb\xbf"

T = TypeVar("T")


def payload_bytes(body: bytes) -> bytes:
    """The JSON text of a body: without surrounding white space or a UTF-8 byte-order mark.

    This is what the canonical event keeps verbatim as `data.provider_payload`. Signatures are
    checked over the body as received, before this.
    """
    return body.removeprefix(_UTF8_BOM).strip(b" \t\r\n")


def decode_payload(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode `body` into the provider's Struct, or raise InvalidPayload with path and reason."""
    text = payload_bytes(body)
    if not text:
        raise InvalidPayload("$", "the body is empty")
    # msgspec skips fields the Struct does not declare without checking their strings' UTF-8;
    # the body is kept verbatim in the canonical event, so all of it must be valid JSON text.
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidPayload("$", f"the body is not UTF-8 (byte {error.start})") from None
    problem: InvalidPayload
    try:
        return decoder.decode(text)
    except msgspec.ValidationError as error:
        reason, _, path = str(error).rpartition(" - at `")
        if reason:
            problem = InvalidPayload(path.rstrip("`"), reason)
        else:
            problem = InvalidPayload("$", str(error))
    except msgspec.DecodeError as error:
        problem = InvalidPayload("$", str(error))
    except RecursionError:
        problem = InvalidPayload("$", "the JSON is nested too deeply")
    # Raised here, not inside the except: the msgspec traceback adds nothing for the reader.
    raise problem


def identifier(value: str | int | None) -> str | None:
    """An id as text: providers write ids as strings or integers; an empty one is no id."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value)
    return text or None


def timestamp(value: str | int | Decimal, path: str) -> datetime:
    """A provider time in UTC."""
    try:
        return parse_timestamp(value)
    except TimestampError as error:
        raise InvalidPayload(path, str(error)) from None


def minor_money(
    amount: int | None, currency: str | None, settings: SourceSettings, path: str
) -> Money | None:
    """Money from minor units; null without an amount or any currency."""
    code = currency or settings.currency
    if amount is None or code is None:
        return None
    try:
        return money_from_minor(amount, code)
    except MoneyError as error:
        raise InvalidPayload(path, str(error)) from None


def major_money(
    amount: Decimal | str | None, currency: str | None, settings: SourceSettings, path: str
) -> Money | None:
    """Money from major units, keeping the provider's digits; null without amount or currency."""
    code = currency or settings.currency
    if amount is None or code is None:
        return None
    try:
        return money_from_major(amount, code)
    except MoneyError as error:
        raise InvalidPayload(path, str(error)) from None


def minor_or_major_money(
    amount: int | Decimal | None, currency: str | None, settings: SourceSettings, path: str
) -> Money | None:
    """Money where an integer means minor units and anything else (a string, a fraction) major."""
    if isinstance(amount, int):
        return minor_money(amount, currency, settings, path)
    return major_money(amount, currency, settings, path)


def body_digest(body: bytes) -> str:
    """An idempotency key for providers that give no id: the same body is the same event."""
    return "sha256:" + hashlib.sha256(payload_bytes(body)).hexdigest()

"""Sample bodies for a described provider, built from its own expressions (`gateway sample`).

Each field whose expression is plain field names (`data.object.amount`) is set at that path, to
a value that reads back as the field: an id, the requested type, a time, an amount in the
description's unit, a currency, a subject... With `each`, the event sits in a one-element list.
A type asked for by its canonical name (`payment.succeeded`) is spelled as the provider spells
it, from the type table. Each call makes a new event (fresh ids), as built-in samples do.

A type computed by an expression (GoCardless joins `resource_type` and `action`) cannot be set
from the type alone: `fields_of_types` (a preset's `[preset.samples]`) says, for each provider
type it can make, which fields to set to what.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec

from adapters.described.expressions import FieldExpression, FirstOf, KeyPath
from adapters.described.reading import EventFields
from adapters.described.type_table import TypeTable
from adapters.samples import SampleError
from schemas.taxonomy import is_canonical_type

__all__ = ["DescribedSamples"]

# When the table says nothing: the type a payments provider sends most.
_FALLBACK_TYPE = "payment.succeeded"


class DescribedSamples:
    """`(type or None, now) -> body`, the `Adapter.sample` of a described provider."""

    __slots__ = ("_fields", "_fixed", "_types")

    def __init__(
        self,
        fields: EventFields,
        types: TypeTable,
        fields_of_types: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        self._fields = fields
        self._types = types
        # provider type -> {dotted field path: value}, for a type no single field carries.
        self._fixed = dict(fields_of_types or {})

    def known_types(self) -> tuple[str, ...]:
        """The provider types this provider has a canonical type for (`gateway sample`'s hint)."""
        return self._types.provider_types()

    def provider_type(self, requested: str | None) -> str:
        """The provider's spelling of a requested type (a provider or canonical type)."""
        if requested is None:
            return self._types.first_provider_type() or _FALLBACK_TYPE
        if self._types.canonical(requested) is not None or not is_canonical_type(requested):
            return requested
        return self._types.provider_type(requested) or requested

    def __call__(self, requested: str | None, now: datetime) -> bytes:
        fields = self._fields
        event: dict[str, object] = {}
        if _settable(fields.type) is None:
            if requested is None and self._fixed:
                provider_type = next(iter(self._fixed))
            else:
                provider_type = self.provider_type(requested)
            fixed = self._fixed.get(provider_type)
            if fixed is None:
                known = ", ".join(self._fixed) or "none"
                raise SampleError(
                    f"the event type is read by {fields.type.text!r}: a sample body cannot"
                    f" carry {provider_type!r} (samples of: {known})"
                )
            # Set first: the fields below keep what these set (`_set` keeps the first value).
            for dotted, fixed_value in fixed.items():
                _set(event, tuple(dotted.split(".")), fixed_value)
        else:
            provider_type = self.provider_type(requested)
        major = fields.amount_unit == "major"
        values: list[tuple[FieldExpression | None, object]] = [
            (fields.type, provider_type),
            (fields.id, f"evt_{uuid.uuid4().hex[:24]}"),
            (fields.time, now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
            (fields.subject, f"obj_{uuid.uuid4().hex[:24]}"),
            (fields.status, provider_type.rpartition(".")[2]),
            (fields.amount, "10.00" if major else 1000),
            (fields.currency, "EUR"),
            (fields.reference, f"INV-{uuid.uuid4().hex[:8]}"),
            (fields.account_number, "31926819"),
            (fields.account_name, "Ada Lovelace"),
            (fields.account_iban, "GB29NWBK60161331926819"),
            (fields.balance, "2500.00" if major else 250000),
        ]
        for expression, value in values:
            path = _settable(expression)
            if path is not None:
                _set(event, path.keys, value)
        if fields.each is None:
            return msgspec.json.encode(event)
        each = _settable(fields.each)
        if each is None:
            raise SampleError(
                f"the events are found by {fields.each.text!r}: no sample can be made"
            )
        body: dict[str, object] = {}
        _set(body, each.keys, [event])
        return msgspec.json.encode(body)


def _settable(expression: FieldExpression | None) -> KeyPath | None:
    """The field path a sample sets for an expression: its own, or the first of `a || b`."""
    if isinstance(expression, FirstOf):
        return expression.alternatives[0]
    return expression if isinstance(expression, KeyPath) else None


def _set(document: dict[str, object], keys: tuple[str, ...], value: object) -> None:
    """Set `value` at `keys`, making objects on the way; a path through a value set by another
    field (`id = "data"`, `subject = "data.id"`) is left as the first field made it."""
    for key in keys[:-1]:
        inner = document.setdefault(key, {})
        if not isinstance(inner, dict):
            return
        document = inner
    document.setdefault(keys[-1], value)

"""A provider described in TOML (`[providers.<name>]`, docs/reference/providers.md): its types and
its checks.

The Structs below are the schema of a description: its keys, which are required, their defaults
and the values a choice allows are declared there and nowhere else. Each section is read into its
Struct by the converter the config file uses too (adapters/toml_tables.py: every problem with
its place, unknown keys with a did-you-mean), then checked for what types cannot say: JMESPath
that does not compile, placeholders, header names, a `{timestamp}` with no source, type-table
targets outside the taxonomy. Expressions and templates are compiled there, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import msgspec

from adapters.described.expressions import (
    HEADER_NAME,
    ExpressionError,
    FieldExpression,
    HeaderField,
    compile_expression,
    json_quote,
)
from adapters.described.reading import AmountUnit, EventFields
from adapters.described.schemes import (
    HmacAlgorithm,
    HmacScheme,
    KeyForm,
    PublicKeyAlgorithm,
    PublicKeyScheme,
    SignatureEncoding,
    SignedHeader,
    StandardWebhooksScheme,
    TimestampUnit,
)
from adapters.described.templates import HeaderFormat, SignedTemplate, TemplateError
from adapters.described.type_table import TypeTable
from adapters.places import did_you_mean, toml_kind
from adapters.places import dotted as _key
from adapters.toml_tables import Checker, struct_fields, table_fields, unknown_keys
from schemas.taxonomy import CANONICAL_TYPES, KINDS, is_canonical_type

__all__ = [
    "SCHEMES",
    "EventTable",
    "HmacSignature",
    "NoSignature",
    "Problem",
    "ProviderDescription",
    "PublicKeySignature",
    "SignatureTable",
    "StandardWebhooksSignature",
    "parse_description",
]

# (place, message): `("providers.ledgerly.signature.algorithm", '"sha384" is not one of ...')`.
Problem = tuple[str, str]


# --- The schema ---------------------------------------------------------------------------------


class HmacSignature(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="scheme",
    tag="hmac",
):
    """An HMAC of `signed`, keyed with the source's secret, in a header."""

    header: str
    algorithm: HmacAlgorithm = "sha256"
    format: str = "{signature}"
    encoding: SignatureEncoding = "hex"
    signed: str = "{body}"
    timestamp_header: str | None = None
    # Unset: unix seconds or ISO 8601, told apart by their form.
    timestamp_unit: TimestampUnit | None = None
    key: KeyForm = "utf8"


class PublicKeySignature(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="scheme",
    tag="public_key",
):
    """A signature of `signed` by the provider's private key, checked with the source's
    `public_key`. Base64 by default: that is how every such provider writes one."""

    header: str
    algorithm: PublicKeyAlgorithm
    format: str = "{signature}"
    encoding: SignatureEncoding = "base64"
    signed: str = "{body}"
    timestamp_header: str | None = None
    timestamp_unit: TimestampUnit | None = None


class StandardWebhooksSignature(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    tag_field="scheme",
    tag="standard_webhooks",
):
    """The Standard Webhooks scheme: everything about it is fixed by the specification."""


class NoSignature(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="scheme", tag="none"
):
    """No provider signature: the source authenticates with `token` and/or `allow_ips`."""


SignatureTable = HmacSignature | PublicKeySignature | StandardWebhooksSignature | NoSignature
SCHEMES: Mapping[str, type[SignatureTable]] = {
    "hmac": HmacSignature,
    "standard_webhooks": StandardWebhooksSignature,
    "public_key": PublicKeySignature,
    "none": NoSignature,
}


class EventTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the event's fields are: JMESPath over the JSON body, or `header:NAME`."""

    type: str
    each: str | None = None
    id: str | None = None
    time: str | None = None
    subject: str | None = None
    status: str | None = None
    amount: str | None = None
    amount_unit: AmountUnit = "minor"
    currency: str | None = None
    reference: str | None = None
    account_number: str | None = None
    account_name: str | None = None
    account_iban: str | None = None
    balance: str | None = None


class ProviderTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole `[providers.<name>]` table."""

    signature: SignatureTable
    event: EventTable
    types: dict[str, str] = msgspec.field(default_factory=dict)


# --- The result ---------------------------------------------------------------------------------

Scheme = HmacScheme | PublicKeyScheme | StandardWebhooksScheme


@dataclass(frozen=True, slots=True)
class ProviderDescription:
    """A checked description: the table as written, and what was compiled from it."""

    table: ProviderTable
    # None for `scheme = "none"`.
    scheme: Scheme | None
    fields: EventFields
    types: TypeTable

    @property
    def scheme_name(self) -> str:
        """`hmac`, `standard_webhooks`, `public_key` or `none`."""
        tag = type(self.table.signature).__struct_config__.tag
        assert isinstance(tag, str)
        return tag

    @property
    def signature_headers(self) -> tuple[str, ...]:
        """Every header a signature is read from (lower case)."""
        if isinstance(self.scheme, StandardWebhooksScheme):
            return ("webhook-signature", "svix-signature")
        if self.scheme is None:
            return ()
        return (self.scheme.where.header,)

    @property
    def signs_url(self) -> bool:
        """Whether `signed` has `{url}`: the source must set `public_url`."""
        if isinstance(self.scheme, HmacScheme | PublicKeyScheme):
            return self.scheme.where.signed.has_url
        return False


def parse_description(
    table: Mapping[str, object], place: str
) -> tuple[ProviderDescription | None, list[Problem]]:
    """A `[providers.<name>]` table -> the checked description and every problem, each with its
    dotted place under `place` (`providers.ledgerly`); None when there is any problem."""
    if not isinstance(table, Mapping):
        return None, [(place, f"expected a table, got {toml_kind(table)}")]
    checker = _DescriptionChecker()
    problems = checker.problems
    unknown_keys(checker, table, list(struct_fields(ProviderTable)), place, _source_setting)
    signature = _signature(checker, table.get("signature"), _key(place, "signature"))
    fields = _event(checker, table.get("event"), _key(place, "event"))
    types = _types(table.get("types", {}), _key(place, "types"), problems)
    if problems or signature is None or fields is None or types is None:
        return None, problems
    decoded, scheme = signature
    event, compiled_fields = fields
    provider = ProviderTable(signature=decoded, event=event, types=types)
    return ProviderDescription(provider, scheme, compiled_fields, TypeTable(types)), problems


# --- Reading a table into its Struct (adapters/toml_tables.py), in a description's words ---------


class _DescriptionChecker(Checker):
    def not_a_choice(self, place: str, value: str, choices: tuple[str, ...]) -> str:
        return _not_one_of(value, choices)


def _fields(
    checker: Checker,
    table: Mapping[str, object],
    struct: type[msgspec.Struct],
    place: str,
    elsewhere: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`table` as `struct`'s fields; `elsewhere` explains keys that belong to another variant."""

    def unknown(key: str) -> str | None:
        return (elsewhere or {}).get(key) or _source_setting(key)

    def required(key: str) -> str:
        """`required for an hmac signature: the request header ...`."""
        tag = struct.__struct_config__.tag
        message = "required"
        if isinstance(tag, str):
            message += f" for {'an' if tag[0] in 'aehiou' else 'a'} {tag} signature"
        annotation = struct_fields(struct)[key].type
        if get_origin(annotation) is Literal:
            return f"{message}: one of {', '.join(get_args(annotation))}"
        what = _REQUIRED_WHAT.get(key)
        return f"{message}: {what}" if what else message

    return table_fields(checker, table, struct, place, skip=(), unknown=unknown, required=required)


def _source_setting(key: str) -> str | None:
    if key in _SOURCE_SETTINGS:
        return "a source setting: set it in the [sources.<name>] that use this provider"
    return None


# What a source says about its provider account, which users may look for in the description.
_SOURCE_SETTINGS = frozenset(
    {"secret", "secrets", "public_key", "public_url", "tolerance_seconds", "currency", "token"}
)
_REQUIRED_WHAT: Mapping[str, str] = {
    "header": "the request header that carries the signature",
    "type": "the expression that finds the provider's event type",
}


# --- [signature] --------------------------------------------------------------------------------


def _signature(
    checker: Checker, value: object, place: str
) -> tuple[SignatureTable, Scheme | None] | None:
    problems = checker.problems
    schemes = tuple(SCHEMES)
    if value is None:
        problems.append((place, f"required: a table with scheme = one of {', '.join(schemes)}"))
        return None
    if not isinstance(value, Mapping):
        problems.append((place, f"expected a table, got {toml_kind(value)}"))
        return None
    scheme_place = _key(place, "scheme")
    name = value.get("scheme")
    if name is None:
        problems.append((scheme_place, f"required: one of {', '.join(schemes)}"))
        return None
    if not isinstance(name, str):
        problems.append((scheme_place, f"expected a string, got {toml_kind(name)}"))
        return None
    if name not in SCHEMES:
        problems.append((scheme_place, _not_one_of(name, schemes)))
        return None
    struct = SCHEMES[name]
    rest = {key: item for key, item in value.items() if key != "scheme"}
    before = len(problems)
    values = _fields(checker, rest, struct, place, _keys_of_other_schemes(name))
    # The texts are checked even when another key is wrong: every problem, not the first.
    parts = None
    if struct is HmacSignature or struct is PublicKeySignature:
        parts = _signed_header_parts(rest, struct, place, problems)
    if len(problems) > before:
        return None
    decoded = struct(**values)
    if isinstance(decoded, HmacSignature | PublicKeySignature):
        assert parts is not None  # no problem was found
        header, timestamp_header, header_format, signed = parts
        where = SignedHeader(
            header=header,
            format=header_format,
            encoding=decoded.encoding,
            signed=signed,
            timestamp_header=timestamp_header,
            timestamp_unit=decoded.timestamp_unit,
        )
        if isinstance(decoded, HmacSignature):
            return decoded, HmacScheme(where, decoded.algorithm, decoded.key)
        return decoded, PublicKeyScheme(where, decoded.algorithm)
    if isinstance(decoded, StandardWebhooksSignature):
        return decoded, StandardWebhooksScheme()
    return decoded, None


def _keys_of_other_schemes(scheme: str) -> dict[str, str]:
    """`only hmac signatures have a key`, for a key some other scheme has."""
    own = {field.encode_name for field in msgspec.structs.fields(SCHEMES[scheme])}
    owners: dict[str, list[str]] = {}
    for other, struct in SCHEMES.items():
        for field in msgspec.structs.fields(struct):
            if field.encode_name not in own:
                owners.setdefault(field.encode_name, []).append(other)
    why = {
        "standard_webhooks": " (the specification fixes its headers, format and key)",
        "none": " (its sources authenticate with token and/or allow_ips)",
    }.get(scheme, "")
    return {
        key: f"only {' and '.join(names)} signatures have a {key}{why}"
        for key, names in owners.items()
    }


def _signed_header_parts(
    table: Mapping[str, object],
    struct: type[msgspec.Struct],
    place: str,
    problems: list[Problem],
) -> tuple[str, str | None, HeaderFormat, SignedTemplate] | None:
    """The header names, format and signed template of a signature, with their checks. Values
    that are not strings are skipped here: the walk reported them."""
    before = len(problems)
    texts = {
        field.encode_name: table.get(field.encode_name, field.default)
        for field in msgspec.structs.fields(struct)
    }
    header = timestamp_header = header_format = signed = None
    if isinstance(texts["header"], str):
        header = _header_name(texts["header"], _key(place, "header"), problems)
    if isinstance(texts["timestamp_header"], str):
        timestamp_header = _header_name(
            texts["timestamp_header"], _key(place, "timestamp_header"), problems
        )
    if isinstance(texts["format"], str):
        header_format = _template(
            HeaderFormat.parse, texts["format"], _key(place, "format"), problems
        )
    if isinstance(texts["signed"], str):
        signed = _template(SignedTemplate.parse, texts["signed"], _key(place, "signed"), problems)
    if header_format is None or signed is None:
        return None
    signed_place = _key(place, "signed")
    if not signed.has_body:
        problems.append(
            (
                signed_place,
                "must contain {body}: a signature that does not cover the body proves"
                " nothing about it",
            )
        )
    has_source = header_format.has_timestamp or "timestamp_header" in table
    if header_format.has_timestamp and "timestamp_header" in table:
        problems.append(
            (_key(place, "timestamp_header"), "format already has {timestamp}: give one of the two")
        )
    if signed.has_timestamp and not has_source:
        problems.append(
            (
                signed_place,
                "has {timestamp}, but format has no {timestamp} and no timestamp_header is set",
            )
        )
    if has_source and not signed.has_timestamp:
        problems.append(
            (
                signed_place,
                "has no {timestamp}: the timestamp the provider sends would go"
                " unchecked (sign it, or do not read one)",
            )
        )
    if "timestamp_unit" in table and not has_source:
        problems.append(
            (
                _key(place, "timestamp_unit"),
                "no timestamp to read: format has no {timestamp} and no timestamp_header is set",
            )
        )
    if header is None or len(problems) > before:
        return None
    return header, timestamp_header, header_format, signed


def _template(parse: Any, text: str, place: str, problems: list[Problem]) -> Any:
    try:
        return parse(text)
    except TemplateError as error:
        problems.append((place, str(error)))
        return None


def _header_name(text: str, place: str, problems: list[Problem]) -> str | None:
    if not HEADER_NAME.fullmatch(text):
        problems.append(
            (
                place,
                f"{json_quote(text)} is not an HTTP header name (RFC 9110 token characters only)",
            )
        )
        return None
    return text.lower()


# --- [event] ------------------------------------------------------------------------------------

_EXPRESSION_FIELDS = tuple(
    field.name for field in msgspec.structs.fields(EventTable) if field.name != "amount_unit"
)


def _event(checker: Checker, value: object, place: str) -> tuple[EventTable, EventFields] | None:
    problems = checker.problems
    if value is None:
        problems.append((place, 'required: a table with at least type = "<expression>"'))
        return None
    if not isinstance(value, Mapping):
        problems.append((place, f"expected a table, got {toml_kind(value)}"))
        return None
    before = len(problems)
    values = _fields(checker, value, EventTable, place)
    # Expressions are compiled even when another key is wrong: every problem, not the first.
    compiled: dict[str, FieldExpression] = {}
    for name in _EXPRESSION_FIELDS:
        text = value.get(name)
        if not isinstance(text, str):
            continue
        try:
            compiled[name] = compile_expression(text, headers=name != "each")
        except ExpressionError as error:
            problems.append((_key(place, name), str(error)))
    if "each" in compiled and isinstance(compiled.get("id"), HeaderField):
        problems.append(
            (
                _key(place, "id"),
                "with each, the id must come from each event, not a header:"
                " every event of the body would get the same id",
            )
        )
    if len(problems) > before:
        return None
    event = EventTable(**values)
    return event, EventFields(amount_unit=event.amount_unit, **compiled)


# --- [types] ------------------------------------------------------------------------------------


def _types(value: object, place: str, problems: list[Problem]) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        problems.append((place, f"expected a table, got {toml_kind(value)}"))
        return None
    before = len(problems)
    table: dict[str, str] = {}
    for key, target in value.items():
        entry = _key(place, key)
        if not isinstance(target, str):
            problems.append((entry, f"expected a canonical type, got {toml_kind(target)}"))
            continue
        problem = _type_entry_problem(key, target)
        if problem is not None:
            problems.append((entry, problem))
            continue
        table[key] = target
    return table if len(problems) == before else None


def _type_entry_problem(key: str, target: str) -> str | None:
    if not key:
        return "an empty provider type maps nothing"
    if "*" in key[:-1]:
        return 'a "*" may only end a provider type (a prefix)'
    if target.endswith("*"):
        if not key.endswith("*"):
            return 'a canonical type ending in "*" needs a key ending in "*" (it receives the rest)'
        kind, dot, _ = target[:-1].partition(".")
        if "*" in target[:-1] or not dot:
            return f'{json_quote(target)}: expected "<kind>.*" (the rest of the type is kept)'
        if kind not in KINDS:
            return f"{json_quote(target)} is not a canonical type: {_no_kind(kind)}"
        return None
    if is_canonical_type(target):
        return None
    kind, dot, action = target.partition(".")
    if kind in KINDS and not (dot and action):
        return f'{json_quote(target)} is not a canonical type: expected "<kind>.<action>"'
    if kind not in KINDS:
        return f"{json_quote(target)} is not a canonical type: {_no_kind(kind)}"
    return f"{json_quote(target)} is not a canonical type{_did_you_mean(target, CANONICAL_TYPES)}"


def _no_kind(kind: str) -> str:
    return f"no kind {json_quote(kind)}{_did_you_mean(kind, KINDS)} (kinds: {', '.join(KINDS)})"


# --- Messages -----------------------------------------------------------------------------------


def _not_one_of(value: str, choices: tuple[str, ...]) -> str:
    return f"{json_quote(value)} is not one of {', '.join(choices)}{_did_you_mean(value, choices)}"


def _did_you_mean(word: str, candidates: Any) -> str:
    # Closer than difflib's default (0.6), which offers "sha1" for "sha384".
    return did_you_mean(word, sorted(candidates), cutoff=0.7)

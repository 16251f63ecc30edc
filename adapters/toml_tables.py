"""A TOML table read into a Struct's fields, every problem reported with its place: the one
converter the config file (gateway/config/) and provider descriptions (adapters/described/) share.

The Struct's annotations say everything: which keys exist, their types and bounds (msgspec
`Meta`), and the checks a type cannot express (functions in the `Annotated`, each returning the
value or raising ValueError with its sentence). msgspec converts each value; its complaint is
then said in check-config's words, from the type and the value. Each key, and each element of an
array, is converted on its own, so that one run lists every problem, not only the first.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

from adapters.places import did_you_mean, toml_kind
from adapters.places import dotted as key_place

__all__ = [
    "FAILED",
    "UNRESOLVED",
    "Checker",
    "convert",
    "holds_unresolved",
    "struct_fields",
    "table_fields",
    "unknown_keys",
]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


# A string whose `${NAME}` is unset: already reported, so checked no further.
UNRESOLVED: Any = _Marker("unresolved")
# What `convert` returns for a value it reported a problem with.
FAILED: Any = _Marker("failed")
_NATIVE = (str, int, float, bool)
_DID_YOU_MEAN = re.compile(r" \(did you mean [^)]*\)")


class Checker:
    """Collects problems and warnings, and knows which values came from the environment."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[str] = []
        # place -> the variables its string was built from: such a value may be a secret, so
        # messages name the variables instead of quoting it.
        self.from_environment: dict[str, list[str]] = {}

    def add(self, place: str, message: str) -> None:
        self.problems.append((place, message))

    def show(self, place: str, value: str) -> str:
        """`value` quoted for a message, unless it came from the environment."""
        names = self.from_environment.get(place)
        if names is None:
            return json.dumps(value, ensure_ascii=False)
        return "(the value of " + ", ".join(f"${{{name}}}" for name in names) + ")"

    def fill(self, place: str, message: str, value: object) -> str:
        """A check's sentence with `{value}` shown; about a value from the environment, without
        a did-you-mean (it would quote part of it)."""
        if "{value}" not in message or not isinstance(value, str):
            return message
        if place in self.from_environment:
            message = _DID_YOU_MEAN.sub("", message)
        return message.replace("{value}", self.show(place, value))

    def not_a_choice(self, place: str, value: str, choices: tuple[str, ...]) -> str:
        """What a string outside a `Literal`'s choices gets: `unknown role "x" (supported: ...)`."""
        what = place.rpartition(".")[2]
        return (
            f"unknown {what} {self.show(place, value)}{did_you_mean(value, choices)}"
            f" (supported: {', '.join(choices)})"
        )


def holds_unresolved(value: object) -> bool:
    if isinstance(value, dict):
        return any(holds_unresolved(item) for item in value.values())
    if isinstance(value, list):
        return any(holds_unresolved(item) for item in value)
    return value is UNRESOLVED


def struct_fields(struct: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    return {field.encode_name: field for field in msgspec.structs.fields(struct)}


def convert(checker: Checker, value: object, annotation: Any, place: str) -> Any:
    """`value` as `annotation` says, or FAILED with the problem noted at `place`."""
    if holds_unresolved(value):
        return FAILED
    base, metas, checks = _parts(annotation)
    meta = _merged(metas)
    if get_origin(base) is tuple and get_args(base)[1:] == (Ellipsis,):
        return _array(checker, value, get_args(base)[0], meta, place)
    result: Any
    if _custom(base):
        # A wrapper (Secret, a URL, a path) or a union only its check can read: a string first.
        if not isinstance(value, str):
            checker.add(place, f"expected a string, got {toml_kind(value)}")
            return FAILED
        if not value:
            checker.add(place, "must not be empty")
            return FAILED
        result = base(value) if isinstance(base, type) else value
    else:
        try:
            result = msgspec.convert(value, Annotated[(base, *metas)] if metas else base)
        except msgspec.ValidationError:
            checker.add(place, _mismatch(checker, value, base, meta, place))
            return FAILED
    for check in checks:
        try:
            result = check(result)
        except ValueError as error:
            checker.add(place, checker.fill(place, str(error), value))
            return FAILED
    return result


def _array(
    checker: Checker, value: object, item: Any, meta: dict[str, Any], place: str
) -> tuple[Any, ...] | Any:
    if not isinstance(value, list):
        checker.add(place, f"expected an array, got {toml_kind(value)}")
        return FAILED
    extra = meta.get("extra") or {}
    if not value and meta.get("min_length"):
        checker.add(place, extra.get("empty", "must not be an empty array"))
        return FAILED
    longest = meta.get("max_length")
    if longest is not None and len(value) > longest:
        # Every element is still checked: the fix may be to both.
        checker.add(place, f"at most {longest} {extra.get('items', 'items')}, not {len(value)}")
    items = [convert(checker, one, item, f"{place}[{n}]") for n, one in enumerate(value)]
    if any(one is FAILED for one in items) or (longest is not None and len(value) > longest):
        return FAILED
    return tuple(items)


def _parts(annotation: Any) -> tuple[Any, list[msgspec.Meta], list[Callable[[Any], Any]]]:
    """The type under `Annotated` and `| None` (TOML has no null), its Metas and its checks."""
    metas: list[msgspec.Meta] = []
    checks: list[Callable[[Any], Any]] = []
    while True:
        if get_origin(annotation) is Annotated:
            annotation, *extras = get_args(annotation)
            metas += [extra for extra in extras if isinstance(extra, msgspec.Meta)]
            checks += [extra for extra in extras if callable(extra)]
        elif get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(
            annotation
        ):
            (annotation,) = [arg for arg in get_args(annotation) if arg is not type(None)]
        else:
            return annotation, metas, checks


def _merged(metas: list[msgspec.Meta]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for meta in metas:
        for name in ("ge", "gt", "le", "min_length", "max_length", "extra"):
            if getattr(meta, name) is not None:
                merged[name] = getattr(meta, name)
    return merged


def _custom(base: Any) -> bool:
    if get_origin(base) is Literal:
        return False
    return not (base in _NATIVE or (isinstance(base, type) and issubclass(base, msgspec.Struct)))


def _mismatch(checker: Checker, value: object, base: Any, meta: dict[str, Any], place: str) -> str:
    """What msgspec refused, in check-config's words: from the type and the value."""
    extra = meta.get("extra") or {}
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if get_origin(base) is Literal:
        if not isinstance(value, str):
            return f"expected a string, got {toml_kind(value)}"
        return checker.not_a_choice(place, value, tuple(str(choice) for choice in get_args(base)))
    if base is int and number and isinstance(value, int):
        if meta.get("le") is not None:
            return f"must be from {meta['ge']} to {meta['le']}, not {value}"
        return f"must be at least {meta['ge']}, not {value}"
    if base is int:
        if "or" in extra and isinstance(value, str):
            return f'expected an integer or "{extra["or"]}", got {checker.show(place, value)}'
        return f"expected an integer, got {toml_kind(value)}"
    if base is float:
        unit = extra.get("unit", "seconds")
        if not number:
            return f"expected a number of {unit}, got {toml_kind(value)}"
        lowest = "from 0" if meta.get("ge") == 0 else "more than 0 and"
        return f"must be {lowest} up to {meta['le']:g} {unit}, not {value}"
    if base is bool:
        return f"expected true or false, got {toml_kind(value)}"
    if base is str:
        return "must not be empty" if value == "" else f"expected a string, got {toml_kind(value)}"
    return f"expected a table, got {toml_kind(value)}"


def table_fields(
    checker: Checker,
    table: Mapping[str, object],
    struct: type[msgspec.Struct],
    place: str,
    *,
    skip: tuple[str, ...] = ("name",),
    aliases: Mapping[str, str] | None = None,
    unknown: Callable[[str], str | None] | None = None,
    required: Callable[[str], str] = lambda key: "required",
) -> dict[str, Any]:
    """The keys of `table` converted to `struct`'s fields (FAILED where they could not be),
    in file order. `aliases` are singular keys for a plural field (`secret` for `secrets`);
    `unknown(key)` may say more about a key of no field than "unknown key"."""
    aliases = aliases or {}
    fields = {name: field for name, field in struct_fields(struct).items() if name not in skip}
    unknown_keys(checker, table, [*fields, *aliases], place, unknown)
    for one, many in aliases.items():
        if one in table and many in table:
            checker.add(key_place(place, many), f"set either {one} or {many}, not both")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in aliases:
            item = get_args(_parts(fields[aliases[key]].type)[0])[0]
            values[aliases[key]] = (convert(checker, value, item, key_place(place, key)),)
        elif key in fields:
            values[key] = convert(checker, value, fields[key].type, key_place(place, key))
    singular = {many: one for one, many in aliases.items()}
    for name, field in fields.items():
        if field.required and name not in values:
            # Named as a table most simply says it: `secret` for a required `secrets`.
            checker.add(key_place(place, singular.get(name, name)), required(name))
    return values


def unknown_keys(
    checker: Checker,
    table: Mapping[str, object],
    known: list[str],
    place: str,
    unknown: Callable[[str], str | None] | None = None,
) -> None:
    """Each key of `table` not in `known`: "unknown key" with the closest known one, unless
    `unknown(key)` says more (a key of another kind, a setting that belongs elsewhere)."""
    for key in table:
        if key not in known:
            said = unknown(key) if unknown else None
            checker.add(key_place(place, key), said or f"unknown key{did_you_mean(key, known)}")

"""Where a described provider's event fields are: a JMESPath expression, or a request header.

docs/reference/providers.md: `"data.object.id"` is JMESPath over the decoded JSON body,
`"header:NAME"` a request header. Expressions are compiled once, when the description is read. Most
are plain field names joined by dots; those are read by walking dicts with a precompiled tuple of
keys, because a described provider must cost about what a built-in does and jmespath's interpreter
is several times slower than a dict lookup. The two give the same answer: JMESPath's field access on
anything but an object is null, and so is a missing key.

An expression that finds nothing gives None, never an exception: the same holds for a JMESPath
function applied to the wrong type (`length(amount)` on a number), which jmespath raises.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import jmespath  # type: ignore[import-untyped]  # no stubs; used through FieldExpression only
import msgspec
from jmespath.exceptions import (  # type: ignore[import-untyped]
    IncompleteExpressionError,
    JMESPathError,
    LexerError,
)
from jmespath.functions import Functions, signature  # type: ignore[import-untyped]

__all__ = [
    "HEADER_NAME",
    "ExpressionError",
    "FieldExpression",
    "FirstOf",
    "HeaderField",
    "KeyPath",
    "QueryExpression",
    "compile_expression",
]

HEADER_PREFIX: Final = "header:"
# RFC 9110 token characters: what a header name may be made of.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ExpressionError(ValueError):
    """An expression that cannot be compiled; the message says why, for check-config."""


class FieldExpression:
    """One compiled expression: `find` the value in a decoded body (or the request headers).

    `path` names where the value is, for InvalidPayload: a JSON path (`$.data.object.amount`)
    for field names, the expression itself otherwise, `header:NAME` for a header.
    """

    __slots__ = ("path", "text")

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path

    def find(self, document: object, headers: Mapping[str, str]) -> object:
        raise NotImplementedError

    def path_in(self, element: str) -> str:
        """`path` for the expression applied to `element` (`$.events[2]`) instead of `$`."""
        return element + self.path.removeprefix("$") if self.path.startswith("$") else self.path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"


class KeyPath(FieldExpression):
    """Field names joined by dots: a walk through dicts."""

    __slots__ = ("keys",)

    def __init__(self, text: str, keys: tuple[str, ...]) -> None:
        super().__init__(text, _json_path(keys))
        self.keys = keys

    def find(self, document: object, headers: Mapping[str, str]) -> object:
        value = document
        for key in self.keys:
            if type(value) is not dict:
                return None
            value = value.get(key)
        return value


class FirstOf(FieldExpression):
    """Field paths joined by `||` (`data.object.account_name || data.object.name`): the first
    value JMESPath counts as true, else the last, as its interpreter would say."""

    __slots__ = ("alternatives",)

    def __init__(self, text: str, alternatives: tuple[KeyPath, ...]) -> None:
        super().__init__(text, alternatives[0].path)
        self.alternatives = alternatives

    def find(self, document: object, headers: Mapping[str, str]) -> object:
        return first_true([path.find(document, headers) for path in self.alternatives])


def first_true(values: list[object]) -> object:
    """JMESPath's `a || b || c`: the first value that is not false, null, "", [] or {} (0 is
    true), else the last."""
    for value in values[:-1]:
        if value is not None and value is not False and value != "" and value != [] and value != {}:
            return value
    return values[-1]


class _DecimalFunctions(Functions):  # type: ignore[misc]  # jmespath has no stubs
    """JMESPath's functions, counting Decimal as a number: bodies are decoded with JSON
    fractions as Decimal (exact money), which jmespath's own type checks would refuse, so that
    `sum(lines[].amount)` would find nothing."""

    def _get_allowed_pytypes(self, types: Any) -> tuple[list[str], list[tuple[str, ...]]]:
        allowed, subtypes = super()._get_allowed_pytypes(types)
        if "float" in allowed:
            allowed = [*allowed, "Decimal"]
        return allowed, [(*sub, "Decimal") if "float" in sub else sub for sub in subtypes]

    def _convert_to_jmespath_type(self, pyobject: str) -> str:
        # What sort_by, min_by and max_by ask of their keys.
        return (
            "number" if pyobject == "Decimal" else str(super()._convert_to_jmespath_type(pyobject))
        )

    @signature({"types": []})  # type: ignore[untyped-decorator]
    def _func_type(self, arg: object) -> object:
        return "number" if isinstance(arg, Decimal) else super()._func_type(arg)

    @signature({"types": []})  # type: ignore[untyped-decorator]
    def _func_to_number(self, arg: object) -> object:
        if isinstance(arg, Decimal):
            return arg
        if isinstance(arg, str):
            if _JSON_NUMBER.fullmatch(arg):
                return int(arg) if _WHOLE.fullmatch(arg) else Decimal(arg)
            return None
        return super()._func_to_number(arg)

    @signature({"types": []})  # type: ignore[untyped-decorator]
    def _func_to_string(self, arg: object) -> object:
        if isinstance(arg, str):
            return arg
        return _encoder.encode(arg).decode()


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_WHOLE = re.compile(r"-?[0-9]+")
_encoder = msgspec.json.Encoder(decimal_format="number")
_OPTIONS = jmespath.Options(custom_functions=_DecimalFunctions())


class QueryExpression(FieldExpression):
    """Anything else JMESPath can say (`data.items[0].amount`, `a || b`), by its interpreter."""

    __slots__ = ("_parsed",)

    def __init__(self, text: str, parsed: Any) -> None:
        super().__init__(text, text)
        self._parsed = parsed

    def find(self, document: object, headers: Mapping[str, str]) -> object:
        try:
            return self._parsed.search(document, options=_OPTIONS)
        # jmespath raises its own errors for a function given the wrong type, and Python's for
        # an ordering between a string and a number (`[?amount > `1`]` on "10"): what the body
        # holds must never make an exception, so each of them finds nothing.
        except (JMESPathError, TypeError, ValueError, ArithmeticError, RecursionError):
            return None


class HeaderField(FieldExpression):
    """`header:NAME`: a request header (names arrive lower-cased from the ingress)."""

    __slots__ = ("name",)

    def __init__(self, text: str, name: str) -> None:
        super().__init__(text, text)
        self.name = name.lower()

    def find(self, document: object, headers: Mapping[str, str]) -> str | None:
        return headers.get(self.name)


def compile_expression(text: str, *, headers: bool = True) -> FieldExpression:
    """The compiled form of an event expression, or ExpressionError saying what is wrong."""
    if text.startswith(HEADER_PREFIX):
        if not headers:
            raise ExpressionError("expected a JMESPath expression over the body, not a header")
        name = text[len(HEADER_PREFIX) :].strip()
        if not HEADER_NAME.fullmatch(name):
            raise ExpressionError(
                f"{json_quote(name)} is not an HTTP header name (RFC 9110 token characters only)"
            )
        return HeaderField(text, name)
    if not text.strip():
        raise ExpressionError("the expression is empty")
    try:
        parsed = jmespath.compile(text)
    except JMESPathError as error:
        raise ExpressionError(f"not a JMESPath expression: {_parse_problem(error)}") from None
    # jmespath finds an unknown function or a wrong number of arguments only when it runs.
    _check_functions(parsed.parsed)
    keys = _field_names(parsed.parsed)
    if keys is not None:
        return KeyPath(text, keys)
    alternatives = _alternatives(parsed.parsed)
    if alternatives is not None:
        return FirstOf(text, tuple(KeyPath(".".join(path), path) for path in alternatives))
    return QueryExpression(text, parsed)


def _field_names(node: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The keys of an expression made only of field names (`a.b."c-d"`), else None."""
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression":
        keys: tuple[str, ...] = ()
        for child in node["children"]:
            part = _field_names(child)
            if part is None:
                return None
            keys += part
        return keys
    return None


def _check_functions(node: Mapping[str, Any]) -> None:
    if node.get("type") == "function_expression":
        name = node["value"]
        entry = _FUNCTIONS.get(name)
        if entry is None:
            matches = difflib.get_close_matches(name, list(_FUNCTIONS), n=1)
            hint = f" (did you mean {matches[0]}()?)" if matches else ""
            raise ExpressionError(f"no JMESPath function {name}(){hint}")
        signature = entry["signature"]
        given = len(node["children"])
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if given < len(signature) or (given > len(signature) and not variadic):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            plural = "" if wanted == "1" else "s"
            raise ExpressionError(f"{name}() takes {wanted} argument{plural}, not {given}")
    for child in node.get("children", ()):
        if isinstance(child, Mapping):
            _check_functions(child)


_FUNCTIONS: Mapping[str, Any] = _DecimalFunctions.FUNCTION_TABLE


def _parse_problem(error: JMESPathError) -> str:
    """jmespath's reason and column on one line (its own text spans three, with a caret)."""
    if isinstance(error, LexerError):
        return f"{error.message} at column {error.lexer_position + 1}"
    if isinstance(error, IncompleteExpressionError):
        return "incomplete expression"
    return f"{error.msg} at column {error.lex_position + 1}"


def _alternatives(node: Mapping[str, Any]) -> list[tuple[str, ...]] | None:
    """The field paths of `a.b || c || d.e`, in order, else None."""
    if node["type"] != "or_expression":
        return None
    paths: list[tuple[str, ...]] = []
    for child in node["children"]:
        keys = _field_names(child)
        if keys is not None:
            paths.append(keys)
            continue
        nested = _alternatives(child)
        if nested is None:
            return None
        paths.extend(nested)
    return paths


def _json_path(keys: tuple[str, ...]) -> str:
    """`$.data.object.id`, with keys that are not identifiers quoted (`$["x-id"]`)."""
    return "$" + "".join(
        f".{key}" if _IDENTIFIER.fullmatch(key) else f"[{json_quote(key)}]" for key in keys
    )


def json_quote(text: str) -> str:
    """`text` in double quotes, JSON-escaped, for a message."""
    return json.dumps(text, ensure_ascii=False)

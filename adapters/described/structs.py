"""Structs generated from a description's field paths: how a described body is decoded fast.

A built-in adapter decodes its body into Structs that name only the fields it reads; msgspec
skips the rest without building them. A description whose body expressions are all field paths
(`data.object.amount`, or several joined by `||`) gets the same: a Struct per object on the
paths, every leaf `Any` (the value as JSON has it, fractions as Decimal), every object on the
way defaulting to an empty one, and one `attrgetter` that reads every path in a single call.

The answer is the one walking the decoded dicts gives (reading.py's general path): a missing
key is None either way. Where the two would differ, decoding fails and the caller takes the
general path: an object on the way that is null or not an object at all (JMESPath says null
there; the Struct cannot hold it), a body that is not an object. A description with any other
JMESPath, or a path that runs through another path's value (`data` and `data.id`), always takes
the general path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any

import msgspec

from adapters.described.expressions import (
    FieldExpression,
    FirstOf,
    HeaderField,
    KeyPath,
    first_true,
)

__all__ = ["EventStructs"]

_Trie = dict[str, "_Trie | None"]  # None marks a leaf
# A class attribute of every generated Struct, None: what a slot without a path reads. Not a
# field, so no key of the body can set it.
_NONE = "_none"


class EventStructs:
    """The generated decoders of one description, and how each field's value is picked."""

    __slots__ = ("_event", "_events", "_getter", "_list_getter", "_patches", "_slots")

    def __init__(
        self,
        event: msgspec.json.Decoder[Any],
        getter: Callable[[Any], tuple[object, ...]],
        patches: tuple[tuple[int, tuple[int, ...] | str], ...],
        events: msgspec.json.Decoder[Any] | None,
        list_getter: Callable[[Any], object] | None,
        slots: int,
    ) -> None:
        self._event = event
        self._getter = getter
        self._patches = patches
        self._events = events
        self._list_getter = list_getter
        self._slots = slots

    @classmethod
    def build(
        cls, slots: Sequence[FieldExpression | None], each: FieldExpression | None
    ) -> EventStructs | None:
        """The Structs for `slots` (the event's expressions), or None when they cannot say it."""
        if each is not None and not isinstance(each, KeyPath):
            return None
        # One attrgetter reads a value per slot, in slot order: a path's value, or `_none`
        # (a class attribute, never decoded) for a slot without a path. The `||` alternatives
        # follow; `patches` then sets the slots they and the headers give.
        paths: list[tuple[str, ...]] = []
        alternatives: list[tuple[str, ...]] = []
        patches: list[tuple[int, tuple[int, ...] | str]] = []
        for slot, expression in enumerate(slots):
            if expression is None:
                paths.append(())
            elif isinstance(expression, KeyPath):
                paths.append(expression.keys)
            elif isinstance(expression, FirstOf):
                paths.append(())
                first = len(slots) + len(alternatives)
                alternatives.extend(path.keys for path in expression.alternatives)
                patches.append((slot, tuple(range(first, first + len(expression.alternatives)))))
            elif isinstance(expression, HeaderField):
                paths.append(())
                patches.append((slot, expression.name))
            else:
                return None
        paths.extend(alternatives)
        trie = _trie([path for path in paths if path])
        if trie is None:
            return None
        root, attributes = _struct("Event", trie)
        getter = _tuple_getter([attributes[path] if path else _NONE for path in paths])
        events = list_getter = None
        if isinstance(each, KeyPath):
            outer = _trie([each.keys])
            assert outer is not None  # one path cannot cross another
            events_root, events_attributes = _struct("Events", outer, list[msgspec.Raw] | None)
            events = msgspec.json.Decoder(events_root)
            list_getter = attrgetter(events_attributes[each.keys])
        return cls(
            msgspec.json.Decoder(root, float_hook=Decimal),
            getter,
            tuple(patches),
            events,
            list_getter,
            len(slots),
        )

    def values(self, text: bytes, headers: Mapping[str, str]) -> Sequence[object] | None:
        """Every slot's value in one event's JSON, or None: take the general path."""
        try:
            event = self._event.decode(text)
        except (msgspec.DecodeError, RecursionError):
            return None  # the general path says what is wrong, if anything is
        found = self._getter(event)
        if not self._patches:
            return found
        values = list(found[: self._slots])
        for slot, source in self._patches:
            if isinstance(source, str):
                values[slot] = headers.get(source)
            else:
                values[slot] = first_true([found[index] for index in source])
        return values

    def events(self, text: bytes) -> list[bytes] | None:
        """Each event's JSON, exactly as in the body, or None: take the general path (which
        also says what is wrong when `each` finds no list)."""
        assert self._events is not None
        assert self._list_getter is not None
        try:
            found = self._list_getter(self._events.decode(text))
        except (msgspec.DecodeError, RecursionError):
            return None
        if not isinstance(found, list):
            return None
        return [bytes(raw) for raw in found]


def _trie(paths: list[tuple[str, ...]]) -> _Trie | None:
    """The paths as nested dicts; None when one path is a proper prefix of another."""
    trie: _Trie = {}
    for path in sorted(set(paths), key=len):
        node = trie
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if child is None:
                return None  # this path runs through another one's value
            node = child
        if path[-1] in node:
            return None
        node[path[-1]] = None
    return trie


def _struct(
    name: str, trie: _Trie, leaf: Any = Any
) -> tuple[type[msgspec.Struct], dict[tuple[str, ...], str]]:
    """A Struct for one object of the trie, and the attribute path of every leaf under it.

    Attributes are `f0`, `f1`, ... renamed to the JSON keys, which need not be identifiers.
    """
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    attributes: dict[tuple[str, ...], str] = {}
    for number, (key, child) in enumerate(trie.items()):
        attribute = f"f{number}"
        rename[attribute] = key
        if child is None:
            fields.append((attribute, leaf, None))
            attributes[(key,)] = attribute
            continue
        inner, inner_attributes = _struct(f"{name}_{number}", child, leaf)
        fields.append((attribute, inner, msgspec.field(default_factory=inner)))
        for path, dotted in inner_attributes.items():
            attributes[(key, *path)] = f"{attribute}.{dotted}"
    struct = msgspec.defstruct(name, fields, rename=rename, frozen=True, namespace={_NONE: None})
    return struct, attributes


def _tuple_getter(attributes: list[str]) -> Callable[[Any], tuple[object, ...]]:
    """One C call reading every attribute path; attrgetter of one path returns no tuple."""
    if not attributes:
        return lambda event: ()
    if len(attributes) == 1:
        single = attrgetter(attributes[0])
        return lambda event: (single(event),)
    getter: Callable[[Any], tuple[object, ...]] = attrgetter(*attributes)
    return getter

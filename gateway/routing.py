"""Routing: which subscribers an event goes to, from the `[[routes]]` rules.

Pure and evaluated once per event. A route matches when its `sources` (absent: all) contain the
event's source and one of its `types` globs (absent: all) matches the canonical type; the event
goes to the union of the subscribers of every matching route, each once, in config order.
An event no route selects is stored all the same (and counted): routes can change later, and
`gateway replay` can still send it.

`RouteConfig` is one rule as the config file says it (gateway/config/ reads `[[routes]]` into
it), and `unmatched_type_pattern` the check-config warning about a glob no event type can match.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from fnmatch import fnmatchcase, translate
from typing import Annotated, ClassVar

import msgspec

from schemas.taxonomy import CANONICAL_TYPES, KINDS, OPEN_KINDS

__all__ = ["RouteConfig", "Router", "unmatched_type_pattern"]

_NonEmpty = msgspec.Meta(min_length=1)


def _type_pattern(pattern: str) -> str:
    if any(character.isspace() for character in pattern):
        raise ValueError('a type pattern has no whitespace (e.g. "payment.*")')
    return pattern


class RouteConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One `[[routes]]` table. None means "all" (the key was absent)."""

    required: ClassVar[Mapping[str, str]] = {
        "subscribers": "required: the subscribers this route sends to"
    }
    # An empty list would match nothing; "all" is said by leaving the key out.
    sources: (
        Annotated[
            tuple[Annotated[str, _NonEmpty], ...],
            msgspec.Meta(
                min_length=1,
                extra={
                    "empty": "must not be an empty array (leave sources out to match every source)"
                },
            ),
        ]
        | None
    ) = None
    # Glob patterns on the canonical type (fnmatch: `payment.*`, `transfer.succeeded`, `*`).
    types: (
        Annotated[
            tuple[Annotated[str, _NonEmpty, _type_pattern], ...],
            msgspec.Meta(
                min_length=1,
                extra={"empty": "must not be an empty array (leave types out to match every type)"},
            ),
        ]
        | None
    ) = None
    subscribers: Annotated[
        tuple[Annotated[str, _NonEmpty], ...],
        msgspec.Meta(
            min_length=1,
            extra={"empty": "must not be an empty array: a route sends to at least one subscriber"},
        ),
    ]


def unmatched_type_pattern(pattern: str, adapter_names: Collection[str]) -> str | None:
    """`matches no event type (closest: ...)` for a glob no event could have a type matching:
    not a canonical type, nor any action of an open kind (`workflow.*`), nor an unmapped
    `<adapter>.<provider type>` (whose provider types nobody can list in advance)."""
    if any(fnmatchcase(name, pattern) for name in CANONICAL_TYPES):
        return None
    head = pattern.partition(".")[0]
    if any(fnmatchcase(prefix, head) for prefix in (*adapter_names, *OPEN_KINDS)):
        return None
    names = sorted(CANONICAL_TYPES | {f"{kind}.*" for kind in KINDS})
    closest = difflib.get_close_matches(pattern, names, n=3, cutoff=0.6)
    if not closest:
        return "matches no event type (canonical types are <kind>.<action>, e.g. payment.succeeded)"
    return "matches no event type (closest: " + ", ".join(json.dumps(n) for n in closest) + ")"


class _CompiledRoute(msgspec.Struct, frozen=True):
    sources: frozenset[str] | None
    types: re.Pattern[str] | None
    subscribers: tuple[str, ...]


class Router:
    """The routes of one config, compiled: the globs into one regular expression per route."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._routes = tuple(
            _CompiledRoute(
                sources=None if route.sources is None else frozenset(route.sources),
                types=None
                if route.types is None
                else re.compile("|".join(translate(glob) for glob in route.types)),
                subscribers=route.subscribers,
            )
            for route in routes
        )
        self._cache: dict[tuple[str, str], tuple[str, ...]] = {}

    def subscribers_for(self, source: str, event_type: str) -> tuple[str, ...]:
        """The subscribers an event of `event_type` from `source` goes to, each once."""
        key = (source, event_type)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        selected: dict[str, None] = {}
        for route in self._routes:
            if route.sources is not None and source not in route.sources:
                continue
            if route.types is not None and not route.types.match(event_type):
                continue
            selected.update(dict.fromkeys(route.subscribers))
        result = tuple(selected)
        # Types are few (a few dozen per source), but unmapped ones come from providers: bound it.
        if len(self._cache) < 10_000:
            self._cache[key] = result
        return result

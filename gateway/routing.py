"""Routing: which subscribers an event goes to, from the `[[routes]]` rules.

Pure and evaluated once per event. A route matches when its `sources` (absent: all) contain the
event's source and one of its `types` globs (absent: all) matches the canonical type; the event
goes to the union of the subscribers of every matching route, each once, in config order.
An event no route selects is stored all the same (and counted): routes can change later, and
`gateway replay` can still send it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import translate

import msgspec

from gateway.config import RouteConfig

__all__ = ["Router"]


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

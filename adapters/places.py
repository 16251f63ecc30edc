"""Places in a TOML document, and the words check-config uses about them: shared by the config
loader (gateway/config/), provider descriptions (adapters/described/) and the converter both
read their tables with (adapters/toml_tables.py), so that a problem reads the same wherever in
the file it is."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time

__all__ = ["BARE_KEY", "did_you_mean", "dotted", "toml_kind"]

# A key TOML writes without quotes.
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted(parent: str, key: str) -> str:
    """The dotted place of `key` in `parent`, quoted as TOML would when it is not a bare key."""
    part = key if BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """` (did you mean "<closest>"?)`, or nothing when no candidate is close enough."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f' (did you mean "{matches[0]}"?)' if matches else ""


def toml_kind(value: object) -> str:
    """What TOML calls the type of `value`, for "expected X, got Y"."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return "a value of no TOML type"

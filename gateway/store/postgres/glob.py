"""Operators' type filter is a shell glob, as SQLite's GLOB reads it; PostgreSQL has no GLOB,
so the same filter becomes an anchored regular expression matching the same strings."""

from __future__ import annotations

import re

__all__ = ["glob_to_regex", "regex_or_none"]

# A start-of-text anchor after a character: no text matches it.
NEVER_MATCHES = "x^"


def glob_to_regex(glob: str) -> str:
    """A shell glob (SQLite's GLOB: `*`, `?`, `[...]`, `[^...]`, case-sensitive) as an
    anchored PostgreSQL regular expression matching the same strings."""
    parts = ["^"]
    index = 0
    while index < len(glob):
        char = glob[index]
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char == "[":
            end = _class_end(glob, index)
            if end is None:
                # SQLite's GLOB: a bracket that never closes matches nothing at all.
                return NEVER_MATCHES
            body = glob[index + 1 : end]
            negate = body.startswith("^")
            if negate:
                body = body[1:]
            # Inside a bracket expression only `\` (ARE's escape) and `^` first need care.
            body = body.replace("\\", "\\\\")
            if body.startswith("^"):
                body = "\\" + body
            parts.append("[" + ("^" if negate else "") + body + "]")
            index = end
        else:
            parts.append(re.escape(char) if not char.isalnum() else char)
        index += 1
    parts.append("$")
    return "".join(parts)


def _class_end(glob: str, start: int) -> int | None:
    """Where the bracket expression opened at `start` closes (a `]` right after `[` or `[^`
    is a member), None when it never does."""
    index = start + 1
    if index < len(glob) and glob[index] == "^":
        index += 1
    if index < len(glob) and glob[index] == "]":
        index += 1
    end = glob.find("]", index)
    return None if end < 0 else end


def regex_or_none(glob: str | None) -> str | None:
    return None if glob is None else glob_to_regex(glob)

"""Operators' times as the operations read them: gateway/times.py's reading, refused as an
InvalidRequest naming the parameter (the shells map it to 422 or an exit code)."""

from __future__ import annotations

from gateway.operations.errors import InvalidRequest
from gateway.times import unix_seconds

__all__ = ["parse_time"]


def parse_time(name: str, text: str) -> float:
    """Unix seconds from `text`: a number of seconds, or an ISO 8601 time (a time without an
    offset is UTC); InvalidRequest naming the parameter otherwise."""
    try:
        return unix_seconds(text)
    except ValueError as error:
        raise InvalidRequest(f"{name}: {error}") from None

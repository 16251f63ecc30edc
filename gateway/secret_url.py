"""A URL that may carry a secret (a broker's or a database's password): configs end up in
reprs, tracebacks and debug logs, so it shows itself masked, and `reveal()` is for the one place
that connects. Each kind says how it is masked (gateway/broker_url.py, gateway/store/url.py);
like adapters/source.py's `Secret` otherwise."""

from __future__ import annotations

__all__ = ["MASK", "SecretUrl"]

# What stands where a secret was.
MASK = "****"


class SecretUrl:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def _shown(self) -> str:
        """The URL as it may be shown: its secrets masked."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._shown()!r})"

    def __str__(self) -> str:
        return self._shown()

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SecretUrl)
            and type(other) is type(self)
            and other._value == self._value
        )

    def __hash__(self) -> int:
        return hash(self._value)

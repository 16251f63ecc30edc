"""What an operation refuses, as values with a code and a sentence: each shell (the CLI, the
admin API) says it its own way (an exit code, a 404 or a 422)."""

from __future__ import annotations

__all__ = ["InvalidRequest", "OperationError", "UnknownSubscriber"]


class OperationError(Exception):
    """An operator's request the operations refuse."""

    code: str = "invalid_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnknownSubscriber(OperationError):
    """A subscriber name the config does not define."""

    code = "unknown_subscriber"

    def __init__(self, name: str) -> None:
        super().__init__(f"no subscriber named {name!r}")
        self.name = name


class InvalidRequest(OperationError):
    """A bad parameter: a limit out of range, a time that does not read, a malformed cursor;
    `detail` says which and why."""

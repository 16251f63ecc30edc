"""`kind = "file"`: one JSON line per delivery (gateway/delivery/file.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar

from gateway.delivery.settings import SubscriberConfig

__all__ = ["FileSubscriber", "file_subscriber_problems", "path_problem"]


def file_path(path: Path) -> Path:
    # Relative paths stay relative: to the working directory, as the store's are.
    if "\x00" in str(path):
        raise ValueError("a path cannot contain a NUL character")
    return path


class FileSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="file"):
    """One JSON line per delivery appended to `path`."""

    kind: ClassVar[str] = "file"
    path: Annotated[Path, file_path]


def path_problem(path: Path) -> str | None:
    """Why lines cannot be appended to `path` (its directory missing or not writable, or the
    file not writable), relative paths from the working directory as serve reads them; None
    when they can. Nothing is created: a typo in a path (or `/nonexistent-dir` as root) must
    not become a directory tree."""
    directory = path.parent
    if directory.exists() and not directory.is_dir():
        return f"{str(directory)!r} is not a directory"
    if not directory.is_dir():
        return f"the directory {str(directory)!r} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the directory {str(directory)!r} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{str(path)!r} is not writable"
    return None


def file_subscriber_problems(subscribers: Mapping[str, SubscriberConfig]) -> list[str]:
    """`subscribers.<name>.path: <why>` for each file subscriber whose path serve cannot
    append to (gateway/preflight.py refuses to start over them)."""
    return [
        f"subscribers.{name}.path: {problem}"
        for name, subscriber in subscribers.items()
        if isinstance(subscriber, FileSubscriber) and (problem := path_problem(subscriber.path))
    ]

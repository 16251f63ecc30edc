"""structlog, configured once: one JSON object per line on stdout.

Every request line carries the request id and, once known, the event id. Nothing logged ever
holds a secret, token or signature: adapters' error details are written to be safe to show, and
settings wrap secrets in `Secret`, whose repr is a mask.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import select
from typing import Any

import msgspec
import structlog

__all__ = ["DroppingBytesLogger", "configure_logging", "flush_logs"]


class DroppingBytesLogger:
    """Buffers log lines and writes them out in whole lines; drops them when the write fails.

    Logs share the disk with the store: on a full disk, a log write raising inside a request
    would turn the honest 503 into a 500. A lost log line is the lesser harm; `dropped` counts
    them. Lines are not written one by one (a system call per request was 11% of the event
    loop): `flush_logs` runs every 200 ms, or sooner when 256 lines (about 64 KiB) are waiting,
    so a crash loses at most that much of the log.

    Several worker processes share one stdout, so every write is whole lines of at most
    PIPE_BUF bytes, which a pipe never interleaves with another writer's (nor does a file
    opened for appending): a line is never cut by another process's.
    """

    dropped = 0

    def msg(self, message: bytes) -> None:
        _waiting.append(message + b"\n")
        if len(_waiting) >= _FLUSH_LINES:
            flush_logs()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


# Lines waiting for `flush_logs`; a deque, so that a line logged from another thread while a
# flush runs is written by this flush or the next, never lost.
_waiting: collections.deque[bytes] = collections.deque()
# About 64 KiB of typical request lines.
_FLUSH_LINES = 256
_STDOUT_FD = 1


def flush_logs() -> None:
    """Write the waiting log lines (the server calls this on a timer and at exit)."""
    chunk: list[bytes] = []
    size = 0
    while _waiting:
        line = _waiting.popleft()
        if chunk and size + len(line) > select.PIPE_BUF:
            _write(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        _write(chunk)


def _write(lines: list[bytes]) -> None:
    data = memoryview(b"".join(lines))
    try:
        while data:
            data = data[os.write(_STDOUT_FD, data) :]
    except OSError:
        DroppingBytesLogger.dropped += len(lines)


def _dropping_logger(*_: Any) -> DroppingBytesLogger:
    return DroppingBytesLogger()


def _render(_: object, __: str, event_dict: structlog.typing.EventDict) -> bytes:
    return msgspec.json.encode(event_dict, enc_hook=str)


def configure_logging(level: int = logging.INFO) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_dropping_logger,
        cache_logger_on_first_use=True,
    )
    atexit.register(flush_logs)

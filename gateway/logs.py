"""structlog, configured once: one JSON object per line on stdout.

Every request line carries the request id and, once known, the event id. Nothing logged ever
holds a secret, token or signature: adapters' error details are written to be safe to show, and
settings wrap secrets in `Secret`, whose repr is a mask.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO

import msgspec
import structlog

__all__ = ["DroppingBytesLogger", "configure_logging", "flush_logs"]


class DroppingBytesLogger:
    """Writes each log line to a buffered binary stream; drops it when the stream fails.

    Logs share the disk with the store: on a full disk, a log write raising inside a request
    would turn the honest 503 into a 500. A lost log line is the lesser harm; `dropped` counts
    them. Lines are not flushed one by one (a system call per request was 11% of the event
    loop): `flush_logs` runs every 200 ms, so a crash loses at most that much of the log.
    """

    dropped = 0

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def msg(self, message: bytes) -> None:
        try:
            self._stream.write(message + b"\n")
        except OSError:
            DroppingBytesLogger.dropped += 1

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def flush_logs() -> None:
    """Push buffered log lines out (the server calls this on a timer and at exit)."""
    try:
        sys.stdout.buffer.flush()
    except OSError:
        DroppingBytesLogger.dropped += 1


def _dropping_logger(*_: Any) -> DroppingBytesLogger:
    return DroppingBytesLogger(sys.stdout.buffer)


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

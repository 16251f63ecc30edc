"""structlog, configured once: one JSON object per line on stdout.

Every request line carries the request id and, once known, the event id. Nothing logged ever
holds a secret, token or signature: adapters' error details are written to be safe to show, and
settings wrap secrets in `Secret`, whose repr is a mask.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
import structlog

from gateway.tracing import add_trace_ids

__all__ = [
    "LOG_FLUSH_SECONDS",
    "DroppingBytesLogger",
    "configure_logging",
    "flush_logs",
    "flush_logs_periodically",
    "log_uvicorn_records",
    "wait_for_logs",
]


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

    The writes themselves happen on a thread of their own (`_StdoutWriter`): a stdout that
    blocks (a pipe nobody reads, a stalled terminal) would otherwise stop the event loop, and
    every request with it. What that thread cannot take in time is dropped, whole lines at a
    time, and counted.
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


# What may wait for the writer thread: about a second of request lines at 1,000 requests/s.
# Past it, stdout is not keeping up, and lines are dropped rather than memory grown.
MAX_BUFFERED_BYTES = 256 * 1024
# How long the process waits at exit for the writer to finish (a blocked stdout never does).
EXIT_DRAIN_SECONDS = 1.0
# How often a process's event loop hands its waiting lines over (`flush_logs_periodically`).
LOG_FLUSH_SECONDS: Final = 0.2


def flush_logs() -> None:
    """Hand the waiting log lines to the writer thread, in whole-line chunks of at most
    PIPE_BUF bytes (the server calls this on a timer, and at exit). Never blocks."""
    chunk: list[bytes] = []
    size = 0
    while _waiting:
        line = _waiting.popleft()
        if chunk and size + len(line) > select.PIPE_BUF:
            _writer.offer(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        _writer.offer(chunk)


async def flush_logs_periodically(
    on_dropped: Callable[[int], None] | None = None, every: float = LOG_FLUSH_SECONDS
) -> None:
    """`flush_logs` every `every` seconds, until cancelled: a process's event loop runs this as
    a task. `on_dropped(n)` hears of the `n` lines dropped since it last heard (a full disk, a
    stdout nobody reads): the app counts them in /metrics."""
    reported = DroppingBytesLogger.dropped
    while True:
        await asyncio.sleep(every)
        flush_logs()
        dropped = DroppingBytesLogger.dropped
        if dropped > reported:
            if on_dropped is not None:
                on_dropped(dropped - reported)
            reported = dropped


def wait_for_logs(timeout: float) -> bool:
    """Wait until every line handed to the writer is written (or dropped); False when that
    took longer than `timeout` seconds."""
    return _writer.drain(timeout)


class _StdoutWriter:
    """The one thread that writes to stdout, fed whole-line chunks through a bounded buffer.

    A chunk is written whole by blocking writes (the thread may wait, the event loop does not),
    so the stream never holds a cut line: a write of at most PIPE_BUF bytes to a pipe is all or
    nothing, and a longer one is finished by the next write. A chunk that does not fit in the
    buffer is dropped whole, and its lines counted.
    """

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._chunks: collections.deque[tuple[bytes, int]] = collections.deque()
        # Bytes waiting or being written: the buffer's bound counts both.
        self._buffered = 0
        self._thread: threading.Thread | None = None
        self._pid = 0

    def offer(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        with self._ready:
            if self._buffered + len(data) > MAX_BUFFERED_BYTES:
                DroppingBytesLogger.dropped += len(lines)
                return
            self._chunks.append((data, len(lines)))
            self._buffered += len(data)
            # One thread per process: a forked child has none of its parent's threads.
            if self._thread is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()
            self._ready.notify()

    def drain(self, timeout: float) -> bool:
        with self._ready:
            return self._ready.wait_for(lambda: self._buffered == 0, timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._chunks:
                    self._ready.wait()
                data, lines = self._chunks.popleft()
            written = _write(data)
            with self._ready:
                if not written:
                    DroppingBytesLogger.dropped += lines
                self._buffered -= len(data)
                self._ready.notify_all()


def _write(data: bytes) -> bool:
    """Write all of `data` to stdout; False when a write fails (a full disk, a closed pipe)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(_STDOUT_FD, view) :]
    except OSError:
        return False
    return True


_writer = _StdoutWriter()


def _flush_at_exit() -> None:
    flush_logs()
    wait_for_logs(EXIT_DRAIN_SECONDS)


def _dropping_logger(*_: Any) -> DroppingBytesLogger:
    return DroppingBytesLogger()


# structlog's level names for the methods that are aliases (its add_log_level's mapping).
_LEVEL_OF_METHOD = {"warn": "warning", "exception": "error"}


class _UtcClock:
    """Now in UTC as structlog's TimeStamper(fmt="iso", utc=True) writes it,
    `2026-11-24T10:00:00.123456Z` (no fraction when it is zero), with the date and time of day
    formatted once a second rather than on every line."""

    __slots__ = ("_formatted",)

    def __init__(self) -> None:
        # (second, its text) in one value: threads that log (the store's writer does) swap it
        # whole, so no line gets one second's date with another's time.
        self._formatted = (-1, "")

    def now(self) -> str:
        return self.format(time.time_ns())

    def format(self, nanoseconds: int) -> str:
        """`nanoseconds` since the epoch, truncated to microseconds as datetime.now() does."""
        second, micro = divmod(nanoseconds // 1000, 1_000_000)
        formatted = self._formatted
        if formatted[0] != second:
            formatted = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._formatted = formatted
        text = formatted[1]
        return f"{text}.{micro:06d}Z" if micro else f"{text}Z"


_clock = _UtcClock()


def _render(logger: object, method_name: str, event_dict: structlog.typing.EventDict) -> bytes:
    """One JSON line: structlog's merge_contextvars, add_log_level, TimeStamper(iso, utc) and
    format_exc_info, in that order, then msgspec. One processor rather than five: every
    webhook logs a line, and the chain's calls and datetime's formatting were most of its
    cost."""
    event_dict = structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
    event_dict = add_trace_ids(logger, method_name, event_dict)
    event_dict["level"] = _LEVEL_OF_METHOD.get(method_name, method_name)
    event_dict["timestamp"] = _clock.now()
    if "exc_info" in event_dict:
        event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
    return msgspec.json.encode(event_dict, enc_hook=str)


def configure_logging(level: int = logging.INFO) -> None:
    structlog.configure(
        processors=[_render],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_dropping_logger,
        cache_logger_on_first_use=True,
    )
    log_uvicorn_records(logging.WARNING)
    # The OpenTelemetry SDK's own warnings (a collector that refuses or times out, a full span
    # queue): JSON lines of ours too. Its messages name the collector's URL, never its headers.
    _log_records_of("opentelemetry", logging.WARNING, "opentelemetry")
    atexit.register(_flush_at_exit)


# uvicorn logs through the standard library, to this logger (its access log is off: see
# gateway/cli/serve.py `_uvicorn_options`).
_UVICORN_LOGGER = "uvicorn.error"


def log_uvicorn_records(level: int) -> None:
    """uvicorn's own log records, from `level` up, as JSON lines of ours (unconfigured, the
    standard library would print its warnings as bare text on stderr and drop the rest).

    A process that serves the port takes them from WARNING up: its INFO records (`Started server
    process`, `Application startup complete`, ...) say what the gateway's own `started` and
    `stopped` lines say. The parent that runs uvicorn's supervisor of the workers takes them from
    INFO up: the supervisor says there, and only there, that a worker died (`Child process
    [1234] died`) and that it stops them. A level set at all also spares every connection
    uvicorn's trace line, which it formats whenever the logger's own level is at most TRACE
    (unset, it is 0)."""
    _log_records_of(_UVICORN_LOGGER, level, "uvicorn")


def _log_records_of(name: str, level: int, event: str) -> None:
    logger = logging.getLogger(name)
    logger.setLevel(level)
    # Not also to the root logger's handlers: one line a record.
    logger.propagate = False
    if not any(isinstance(handler, _LibraryRecords) for handler in logger.handlers):
        logger.addHandler(_LibraryRecords(event))


class _LibraryRecords(logging.Handler):
    """One JSON line a record: `{"event": "uvicorn", "message": ..., "level": ...}`, with the
    traceback where the record has one (an exception in the app). uvicorn's messages hold pids,
    addresses and exception texts, never a request's headers or body: no signature, token or
    webhook secret."""

    def __init__(self, event: str) -> None:
        super().__init__()
        self._event = event

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"message": record.getMessage()}
            if record.exc_info and record.exc_info[0] is not None:
                fields["exc_info"] = record.exc_info
            logger = structlog.get_logger(self._event)
            if record.levelno >= logging.ERROR:
                logger.error(self._event, **fields)
            elif record.levelno >= logging.WARNING:
                logger.warning(self._event, **fields)
            else:
                logger.info(self._event, **fields)
            # Rare (a worker's death, a stop, an error) and news when they come: written now,
            # not at a periodic flush (the supervisor of `--workers N` has none).
            flush_logs()
        except Exception:
            self.handleError(record)

"""The log writer: whole lines, at most PIPE_BUF bytes a write, in order, never raising."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import logs


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[bytes]]]:
    """stdout replaced by a pipe; each write the logger makes, as the reader got it."""
    read_end, write_end = os.pipe()
    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes | memoryview) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(logs, "_STDOUT_FD", write_end)
    monkeypatch.setattr(logs.os, "write", recording_write)
    drained: list[bytes] = []
    reader = threading.Thread(
        target=lambda: drained.extend(iter(lambda: os.read(read_end, 65536), b""))
    )
    reader.start()
    try:
        yield write_end, writes
    finally:
        os.close(write_end)
        reader.join(timeout=5)
        os.close(read_end)
    assert b"".join(drained) == b"".join(writes)


# The pipe outlives the examples on purpose: each example checks only its own writes.
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(min_value=0, max_value=3 * select.PIPE_BUF), max_size=80))
def test_lines_are_written_whole_and_in_order(
    sizes: list[int], pipe: tuple[int, list[bytes]]
) -> None:
    _, all_writes = pipe
    start = len(all_writes)
    logger = logs.DroppingBytesLogger()
    lines = [b"%d:" % n + b"x" * size for n, size in enumerate(sizes)]
    for line in lines:
        logger.msg(line)
    logs.flush_logs()
    assert logs.wait_for_logs(5)

    writes = all_writes[start:]
    assert b"".join(writes) == b"".join(line + b"\n" for line in lines)
    for write in writes:
        assert write.endswith(b"\n")
        # More than PIPE_BUF only for a single line that long by itself.
        assert len(write) <= select.PIPE_BUF or write.count(b"\n") == 1


def test_a_failing_stdout_drops_lines_instead_of_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # writing now fails (EPIPE)
    monkeypatch.setattr(logs, "_STDOUT_FD", write_end)
    before = logs.DroppingBytesLogger.dropped
    logger = logs.DroppingBytesLogger()
    for n in range(3):
        logger.msg(b"line %d" % n)
    logs.flush_logs()
    assert logs.wait_for_logs(5)
    os.close(write_end)
    assert logs.DroppingBytesLogger.dropped == before + 3


def test_a_stdout_nobody_reads_never_blocks_the_caller_and_drops_whole_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    monkeypatch.setattr(logs, "_STDOUT_FD", write_end)
    before = logs.DroppingBytesLogger.dropped
    logger = logs.DroppingBytesLogger()
    # Several times what the pipe and the writer's buffer hold together.
    lines = [b"%06d:" % n + b"x" * 300 for n in range(4_000)]
    started = time.monotonic()
    for line in lines:
        logger.msg(line)
    logs.flush_logs()
    assert time.monotonic() - started < 2.0, "logging waited for a stdout nobody reads"
    assert logs.DroppingBytesLogger.dropped > before

    # Now somebody reads: what was written is whole lines, in order, and nothing is lost
    # without being counted.
    received: list[bytes] = []
    reader = threading.Thread(
        target=lambda: received.extend(iter(lambda: os.read(read_end, 65536), b""))
    )
    reader.start()
    assert logs.wait_for_logs(10)
    os.close(write_end)
    reader.join(timeout=10)
    os.close(read_end)
    stream = b"".join(received)
    assert stream.endswith(b"\n")
    written = stream.splitlines()
    assert set(written) <= set(lines)
    assert written == sorted(written)
    assert len(written) + logs.DroppingBytesLogger.dropped - before == len(lines)


# One clock for every example: consecutive examples fall in other seconds, so the clock's cached
# date and time of day are checked as they are replaced, not only when fresh.
_CLOCK = logs._UtcClock()


@settings(max_examples=300, deadline=None)
@given(
    nanoseconds=st.one_of(
        st.integers(min_value=0, max_value=4_102_444_800 * 10**9),
        # Whole seconds: datetime.isoformat() writes no fraction then.
        st.integers(min_value=0, max_value=4_102_444_800).map(lambda second: second * 10**9),
    )
)
def test_timestamps_are_written_as_structlogs_iso_utc_stamper_writes_them(
    nanoseconds: int,
) -> None:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=nanoseconds // 1000)
    assert _CLOCK.format(nanoseconds) == moment.isoformat().replace("+00:00", "Z")


_STRUCTLOG_CHAIN = (
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
)


def _through_structlogs_chain(method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for processor in _STRUCTLOG_CHAIN:
        event_dict = processor(None, method_name, event_dict)
    return event_dict


@pytest.mark.parametrize("method_name", ["info", "warning", "warn", "error", "exception"])
def test_a_line_holds_what_structlogs_own_processors_would_have_written(
    method_name: str,
) -> None:
    try:
        raise ValueError("the store is gone")
    except ValueError:
        fields: dict[str, Any] = {"request_id": "r-1", "status": 503, "event": "webhook"}
        if method_name == "exception":
            fields["exc_info"] = True
        structlog.contextvars.bind_contextvars(worker="w-1")
        try:
            line = json.loads(logs._render(None, method_name, dict(fields)))
            expected = _through_structlogs_chain(method_name, dict(fields))
        finally:
            structlog.contextvars.clear_contextvars()
    # The same keys in the same order, and the same values but for the moment of stamping.
    assert list(line) == list(expected)
    assert line.pop("timestamp")[:16] == expected.pop("timestamp")[:16]
    assert line == json.loads(json.dumps(expected, default=str))


# The periodic flush every serving process's event loop runs.


def test_the_periodic_flush_writes_waiting_lines_without_being_asked(
    pipe: tuple[int, list[bytes]],
) -> None:
    _, writes = pipe
    logger = logs.DroppingBytesLogger()

    async def log_and_wait() -> None:
        flusher = asyncio.create_task(logs.flush_logs_periodically(every=0.01))
        try:
            logger.msg(b"periodic 1")
            logger.msg(b"periodic 2")
            deadline = time.monotonic() + 5
            while b"periodic 2" not in b"".join(writes) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            flusher.cancel()

    asyncio.run(log_and_wait())
    assert b"periodic 1\nperiodic 2\n" in b"".join(writes)


def test_the_periodic_flush_reports_each_dropped_line_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # writing now fails (EPIPE): every line is dropped
    monkeypatch.setattr(logs, "_STDOUT_FD", write_end)
    logger = logs.DroppingBytesLogger()
    reported: list[int] = []

    async def drop_and_wait() -> None:
        flusher = asyncio.create_task(logs.flush_logs_periodically(reported.append, every=0.01))
        try:
            for n in range(3):
                logger.msg(b"lost %d" % n)
            await asyncio.sleep(0.05)
            logger.msg(b"lost 3")
            deadline = time.monotonic() + 5
            while sum(reported) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # a report counted twice would show by now
        finally:
            flusher.cancel()

    try:
        asyncio.run(drop_and_wait())
    finally:
        os.close(write_end)
    assert sum(reported) == 4, reported
    assert all(count > 0 for count in reported)


# uvicorn's own records (stdlib logging).


@pytest.fixture
def uvicorn_logger() -> Iterator[logging.Logger]:
    """The gateway's logging configured, and afterwards structlog's configuration and uvicorn's
    logger as they were."""
    saved = structlog.get_config()
    logger = logging.getLogger("uvicorn.error")
    level, propagate, handlers = logger.level, logger.propagate, list(logger.handlers)
    logs.configure_logging()
    try:
        yield logger
    finally:
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers
        structlog.configure(**saved)


def test_uvicorn_records_from_the_level_asked_become_json_lines(
    pipe: tuple[int, list[bytes]], uvicorn_logger: logging.Logger
) -> None:
    _, writes = pipe
    uvicorn_logger.info("Application startup complete.")  # below WARNING, a serving process's
    logs.log_uvicorn_records(logging.INFO)  # as the supervisor of the workers hears them
    uvicorn_logger.info("Child process [%d] died", 4321)
    try:
        raise RuntimeError("a bug in the app")
    except RuntimeError:
        uvicorn_logger.exception("Exception in ASGI application\n")
    assert logs.wait_for_logs(5)
    lines = [json.loads(line) for line in b"".join(writes).splitlines()]
    died = [line for line in lines if line.get("message") == "Child process [4321] died"]
    assert [(line["event"], line["level"]) for line in died] == [("uvicorn", "info")]
    (failed,) = [line for line in lines if line.get("message") == "Exception in ASGI application\n"]
    assert failed["level"] == "error"
    assert "RuntimeError: a bug in the app" in failed["exception"]
    assert not [line for line in lines if "startup" in str(line.get("message"))]
    # Configured twice, one handler of ours: one line a record.
    assert sum(isinstance(h, logs._LibraryRecords) for h in uvicorn_logger.handlers) == 1

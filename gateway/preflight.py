"""What `gateway serve` makes sure of before it serves: the `OTEL_*` variables ask for nothing
it lacks, the address is its own, a SQLite store opens, and every file subscriber can write
where its path says.

Each failure here stops the start with one clear log line, before anything answers on the
port: a gateway that started and then failed its first delivery (or served nothing, its port
taken by another process) would look healthy to whatever supervises it.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable
from typing import Final

import structlog

from gateway.config import GatewayConfig

# file_subscriber_problems lives with the file subscriber's settings: check-config reports the
# same problems.
from gateway.delivery.settings.file import file_subscriber_problems
from gateway.logs import flush_logs
from gateway.store import StoreUnavailable, open_store
from gateway.tracing import TracingConfigError, check_environment

__all__ = [
    "PORT_WAIT_SECONDS",
    "file_subscriber_problems",
    "listen_socket",
    "listen_when_free",
    "store_problem",
    "tracing_problem",
]

log = structlog.get_logger("gateway")

# docs/reference/processes.md: a gateway started while an earlier one is still going away waits this
# long for the port and the store before it gives up.
PORT_WAIT_SECONDS: Final = 10.0
_RETRY_SECONDS: Final = 0.05


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: any free one), ready to hand to uvicorn and to
    worker processes; OSError when the address is taken or not ours to bind.

    Bound here rather than by uvicorn, which binds only after the app has started (logging
    `started` for a gateway that is about to fail) and reports a busy port in plain text.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


def listen_when_free(
    host: str, port: int, wait_seconds: float, *, on_wait: Callable[[], None]
) -> socket.socket:
    """`listen_socket`, waiting up to `wait_seconds` while the address is in use (`on_wait()`
    once, when it first is): the workers of a gateway whose supervisor was killed hold the port
    until they have stopped. Any other failure (no such address, a port not ours) at once."""
    deadline = time.monotonic() + wait_seconds
    waiting = False
    while True:
        try:
            return listen_socket(host, port)
        except OSError as error:
            if error.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise
            if not waiting:
                waiting = True
                on_wait()
        time.sleep(_RETRY_SECONDS)


async def store_problem(config: GatewayConfig, *, wait_seconds: float = 0.0) -> str | None:
    """Why a SQLite store cannot be opened (still, after trying again for up to
    `wait_seconds`: an earlier gateway going away may hold it), or None once it opened
    (creating its files and schema); StoreSchemaError when its schema is newer than this
    gateway's, at once.

    Opened once here so that a file subscriber next to the database (./data) finds its
    directory, and an unopenable file stops the start instead of every worker's. A shared store
    (PostgreSQL) is not: it may be down or being migrated by another node, both of which pass,
    and each process opens it in the background while it answers 503 (gateway/app.py).
    """
    url = config.store.url
    if url.shared:
        return None
    deadline = time.monotonic() + wait_seconds
    while True:
        store = open_store(url.reveal())
        try:
            await store.open()
        except (StoreUnavailable, OSError) as error:
            problem = url.scrub(f"cannot open the store: {error}")
            if time.monotonic() >= deadline:
                return problem
            # Another gateway going away may still hold it: try again until the deadline.
            log.warning("waiting_for_store", detail=problem)
            # Written now: the supervisor has no periodic flush, and this is news while it lasts.
            flush_logs()
            await asyncio.sleep(_RETRY_SECONDS * 10)
            continue
        await store.close()
        return None


def tracing_problem() -> str | None:
    """Why the `OTEL_*` variables cannot be followed (a gRPC exporter, an unknown sampler), or
    None. Checked once, before any worker starts: each worker builds its own tracing
    (gateway/app.py), and a worker that failed at it would be restarted for ever."""
    try:
        check_environment()
    except TracingConfigError as error:
        return str(error)
    return None

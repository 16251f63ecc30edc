"""The writer process: the one process that opens the SQLite store, serving every other process
of `gateway serve` its calls over a Unix socket (gateway/store/wire.py; the client is
gateway/store/remote.py).

Calls from every connection meet in the store's group commit (gateway/store/sqlite.py): one
transaction and one fsync per batch, whichever process each write came from, and each call is
answered after its commit. A connection's calls run concurrently, so a slow one (a page of
events for an operator) holds up nothing else.

It stops on SIGTERM (from `gateway serve`, after the processes that use it stopped): no new
connections, the calls it holds answered, the store closed. SIGINT is not for it: a Ctrl-C in a
terminal reaches every process of the group, and the writer must outlive the serving processes'
last requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final, cast

import msgspec
import structlog

from gateway.logs import configure_logging, flush_logs, flush_logs_periodically, wait_for_logs
from gateway.metrics import Metrics
from gateway.orphans import die_with_parent
from gateway.store.base import StoreSchemaError, StoreUnavailable
from gateway.store.sqlite import SQLiteStore, sqlite_path_from_url
from gateway.store.wire import (
    ERROR_INTERNAL,
    ERROR_NONE,
    ERROR_SCHEMA,
    ERROR_UNAVAILABLE,
    METHODS,
    NEWS_DELIVERIES,
    WATCH,
    FrameReader,
    FrameTooLarge,
    InCall,
    Outbox,
    OutReply,
)

__all__ = ["EXIT_REFUSED", "EXIT_UNOPENABLE", "WriterServer", "run_writer_process"]

log = structlog.get_logger("gateway.writer")

EXIT_UNOPENABLE: Final = 1
EXIT_REFUSED: Final = 3  # a schema newer than this gateway's: as `gateway serve` exits
# Calls one connection may have running at once; past it, its frames wait in the socket.
MAX_CALLS_PER_CONNECTION: Final = 16_384
# A reader that stopped reading our replies: stop writing to it past this much.
MAX_UNSENT_REPLY_BYTES: Final = 64 * 1024 * 1024
STOP_GRACE_SECONDS: Final = 10.0
# Longer than a worker's graceful stop (uvicorn's timeout_graceful_shutdown, 10 s).
IDLE_WAIT_SECONDS: Final = 20.0
# Calls after which the deliveries' dispatchers should look again (the rest cannot make a
# delivery due sooner than the dispatcher already knows).
_NEW_DELIVERIES: Final = frozenset({"accept", "release_quarantined", "redrive", "replay"})
_call_decoder = msgspec.msgpack.Decoder(InCall)


class _BadCall(Exception):
    """A call the writer cannot make: no such method, or arguments not of its types."""


class WriterServer:
    """Serves one store's calls to every connection on a Unix socket."""

    def __init__(self, store: SQLiteStore, socket_path: Path) -> None:
        self._store = store
        self._socket_path = socket_path
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[_Client] = set()
        self._watchers: set[_Client] = set()
        self._calls: set[asyncio.Task[None]] = set()
        self._news_due = False

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Client(self), self._socket_path)
        # Only its owner may ask the writer anything (the directory is private too).
        os.chmod(self._socket_path, 0o600)

    async def idle(self, timeout: float) -> None:
        """Wait until no process is connected, or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while self._clients and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=STOP_GRACE_SECONDS)
        for client in list(self._clients):
            client.transport.close()
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()

    def _connected(self, client: _Client) -> None:
        self._clients.add(client)

    def _disconnected(self, client: _Client) -> None:
        self._clients.discard(client)
        self._watchers.discard(client)

    def _received(self, client: _Client, call: InCall) -> None:
        if call.method == WATCH:
            self._watchers.add(client)
            self._reply(client, OutReply(call.id, ERROR_NONE, "", None))
            return
        task = asyncio.create_task(self._answer(call, client))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        client.running(task)

    async def _answer(self, call: InCall, client: _Client) -> None:
        error, detail, result = ERROR_NONE, "", None
        method = METHODS.get(call.method)
        try:
            if method is None:
                raise _BadCall(f"no store method {call.method!r}")
            try:
                arguments = method.arguments.decode(call.args)
            except msgspec.DecodeError as bad:
                raise _BadCall(f"{call.method}: {bad}") from None
            function = getattr(self._store, method.name)
            result = await function(
                **{name: getattr(arguments, name) for name in method.parameters}
            )
        except StoreUnavailable as failure:
            error, detail = ERROR_UNAVAILABLE, str(failure)
        except StoreSchemaError as failure:
            error, detail = ERROR_SCHEMA, str(failure)
        except _BadCall as failure:
            # A caller's mistake, not the writer's: one line (no traceback to flood the log).
            log.warning("writer_bad_call", detail=str(failure)[:200])
            error, detail = ERROR_INTERNAL, str(failure)[:200]
        except Exception as failure:  # a bug: the caller must hear of it, not wait
            log.exception("writer_call_failed", method=call.method)
            error, detail = ERROR_INTERNAL, f"{type(failure).__name__} in the store's writer"
        self._reply(client, OutReply(call.id, error, detail, result))
        if error == ERROR_NONE and call.method in _NEW_DELIVERIES and self._watchers:
            self._tell_watchers_soon()

    def _reply(self, client: _Client, reply: OutReply) -> None:
        if client.transport.is_closing():
            return
        if client.outbox.unsent_bytes > MAX_UNSENT_REPLY_BYTES:
            log.error("writer_client_not_reading")
            client.transport.close()
            return
        client.outbox.send(reply)

    def _tell_watchers_soon(self) -> None:
        # A group commit answers a whole batch in one loop turn: one word of news for all.
        if not self._news_due:
            self._news_due = True
            asyncio.get_running_loop().call_soon(self._tell_watchers)

    def _tell_watchers(self) -> None:
        self._news_due = False
        news = OutReply(0, ERROR_NONE, NEWS_DELIVERIES, None)
        for client in list(self._watchers):
            self._reply(client, news)


class _Client(asyncio.Protocol):
    """One connected process: its calls parsed as they arrive (gateway/store/wire.py
    `FrameReader`), its replies gathered in its outbox. Past MAX_CALLS_PER_CONNECTION calls
    running, it stops reading: the rest wait in the socket."""

    transport: asyncio.Transport
    outbox: Outbox

    def __init__(self, server: WriterServer) -> None:
        self._server = server
        self._frames = FrameReader()
        self._running = 0
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not registered as asyncio.Transport's subclass).
        self.transport = cast("asyncio.Transport", transport)
        self.outbox = Outbox(self.transport)
        self._server._connected(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._disconnected(self)

    def data_received(self, data: bytes) -> None:
        try:
            for payload in self._frames.feed(data):
                self._server._received(self, _call_decoder.decode(payload))
        except FrameTooLarge as error:
            log.error("writer_frame_too_large", size=error.size)
            self.transport.close()
        except msgspec.DecodeError as error:
            log.error("writer_unreadable_call", error=str(error))
            self.transport.close()

    def running(self, task: asyncio.Task[None]) -> None:
        self._running += 1
        task.add_done_callback(self._call_done)
        if self._running >= MAX_CALLS_PER_CONNECTION and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _call_done(self, _: asyncio.Task[None]) -> None:
        self._running -= 1
        if self._paused and self._running < MAX_CALLS_PER_CONNECTION:
            self._paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()


async def _serve_until_stopped(database_url: str, socket_path: Path) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    flusher = asyncio.create_task(flush_logs_periodically())
    # Nothing but the store's calls runs here: the batches run on this event loop.
    store = SQLiteStore(sqlite_path_from_url(database_url), writer_on_loop=True)
    metrics = Metrics()
    store.watch_commits(metrics.record_commit)
    try:
        await store.open()
    except StoreSchemaError as error:
        log.error("cannot_start", detail=str(error))
        return EXIT_REFUSED
    except (StoreUnavailable, OSError) as error:
        log.error("cannot_start", detail=f"cannot open the store: {error}")
        return EXIT_UNOPENABLE
    server = WriterServer(store, socket_path)
    try:
        await server.start()
        log.info("writer_started", pid=os.getpid())
        await stopping.wait()
        # SIGTERM may have reached every process of the gateway at once (systemd's default
        # KillMode, `timeout`, a kill of the process group): the workers are still answering
        # requests that need the store. It stops once they let go (the parent stops it after
        # them anyway), or after IDLE_WAIT_SECONDS.
        await server.idle(IDLE_WAIT_SECONDS)
        await server.stop()
    finally:
        await store.close()
        flusher.cancel()
        log.info("writer_stopped")
    return 0


def run_writer_process(database_url: str, socket_path: str, parent: int) -> None:
    """The writer process's body (`gateway serve` starts it; the exit code says how it ended)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent, signal.SIGTERM)
    configure_logging()
    code = 1
    try:
        code = _run_loop(_serve_until_stopped(database_url, Path(socket_path)))
    finally:
        flush_logs()
        wait_for_logs(1.0)
    raise SystemExit(code)


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    # uvloop where it is installed (with uvicorn, on Linux and macOS), as the workers run.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)

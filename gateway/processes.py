"""The processes of `gateway serve` on SQLite: one writer that owns the database, the workers that
serve the port, and one deliver process, supervised by the parent.

    parent (this module): holds the port, starts the others, restarts any that dies
    ├── writer   (gateway/store/writer_process.py): the only process that opens SQLite
    ├── worker x server.workers: HTTP (webhooks as `ingest`, health, metrics, /admin)
    └── deliver: the dispatcher, no port

Every child reaches the store through the writer's Unix socket (gateway/store/remote.py), in a
private directory of this run's, with the metrics files every process adds to. The writer starts
first and stops last: a worker's last request, and the deliver process's last attempt records,
still reach it. A child that dies is started again (the writer and the deliver process here,
the workers by uvicorn's supervisor); while the writer is away, ingress answers 503.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final

import structlog

from gateway.logs import flush_logs

__all__ = [
    "WORKER_CONFIG_ENV",
    "WORKER_PARENT_ENV",
    "WORKER_ROLE_ENV",
    "WORKER_WRITER_ENV",
    "Child",
    "ProcessKeeper",
    "StopSignals",
    "private_directory",
    "wait_for_socket",
]

# What a child reads of its parent's settings (gateway/app.py `worker_settings`): the config
# file, the parent's pid, the role (which `serve --role` may have set over the file's) and,
# with a writer process, its socket.
WORKER_CONFIG_ENV: Final = "FINRELAY_WORKER_CONFIG"
WORKER_PARENT_ENV: Final = "FINRELAY_WORKER_PARENT"
WORKER_ROLE_ENV: Final = "FINRELAY_WORKER_ROLE"
WORKER_WRITER_ENV: Final = "FINRELAY_WRITER_SOCKET"

log = structlog.get_logger("gateway")

CHECK_SECONDS: Final = 0.1
FIRST_RESTART_SECONDS: Final = 0.1
MAX_RESTART_SECONDS: Final = 5.0
# A child that ran this long before it died is restarted at once: it was not crash-looping.
STEADY_SECONDS: Final = 10.0
STOP_SECONDS: Final = 15.0
CLEAN_EXIT_GRACE_SECONDS: Final = 2.0
# How a child ends when it was asked to: exit 0 after its own clean stop, or killed by the
# signal itself when it came before the child set its handlers (a child still starting).
ASKED_TO_STOP_EXIT_CODES: Final = frozenset({0, -signal.SIGTERM, -signal.SIGINT})
STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT})
_spawn = multiprocessing.get_context("spawn")


def _run(target: str, args: tuple[Any, ...]) -> None:
    # In the child: the parent names the function rather than importing its module, so the
    # supervisor stays small (the app's stack is the children's to load).
    module, _, function = target.partition(":")
    getattr(importlib.import_module(module), function)(*args)


class Child:
    """One supervised child process: what it runs ("module:function", called with `args`),
    and the process running it now."""

    def __init__(self, name: str, target: str, args: tuple[Any, ...] = ()) -> None:
        self.name = name
        self._target = target
        self._args = args
        self.process: BaseProcess | None = None
        self.started_at = 0.0

    def start(self) -> None:
        self.process = _spawn.Process(
            target=_run, args=(self._target, self._args), name=f"finrelay-{self.name}"
        )
        # A spawned child imports the parent's __main__ first (here the `gateway` command: the
        # whole CLI, every adapter); the child names what it needs itself. Without it the
        # writer starts faster and keeps about 11 MB less (measured: 52 -> 41 MB RSS).
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self.process.start()
        finally:
            sys.modules["__main__"] = main
        self.started_at = time.monotonic()

    @property
    def exitcode(self) -> int | None:
        return None if self.process is None else self.process.exitcode

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_SECONDS: its own clean stop is bounded too."""
        process = self.process
        if process is None or not process.is_alive():
            return
        process.terminate()
        process.join(STOP_SECONDS)
        if process.is_alive():
            log.error("process_stop_timeout", process=self.name, pid=process.pid)
            process.kill()
            process.join()


def wait_for_socket(child: Child, path: Path, timeout: float) -> bool:
    """Whether the child's Unix socket appeared (the writer opened its store and listens)
    before it died or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if not child.alive():
            return False
        time.sleep(0.01)
    return path.exists()


class StopSignals:
    """Whether a SIGTERM or SIGINT has reached this process, known from any thread the moment
    the kernel delivered it: Python's own C-level handler writes each signal's number to a pipe
    (`signal.set_wakeup_fd`), which `heard()` reads.

    Why not a note taken by the Python-level handler: that handler runs in the main thread only,
    whenever the main thread gets to it. A signal to the whole process group (systemd's stop,
    `timeout`) comes as a burst, and one the kernel hands to another thread of this process (it
    does when the main one has one pending) sets no flag the main thread looks at until it next
    takes the GIL (CPython 3.11's eval breaker); the main thread runs uvicorn's supervisor, which
    may wait 5 s on each worker's health check. Meanwhile the children stopped by the same burst
    looked like children that died: the keeper restarted the writer about 9 s after it stopped
    (under the suite's load), and a deliver process that the burst killed while it was still
    starting, 100 ms after (2 runs of the group-signal test in 30 on a loaded machine). The pipe
    is written by whichever thread got the signal, before any Python code runs.

    Made and closed in the main thread (`set_wakeup_fd` is the main thread's to call).
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        # Nobody reads what comes after a stop signal: a full pipe is no warning's worth.
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._heard = False

    def heard(self) -> bool:
        """Whether a SIGTERM or SIGINT came (and since then, always True)."""
        while not self._heard:
            try:
                numbers = os.read(self._read, 512)
            except BlockingIOError:
                break
            if not numbers:
                break
            # Every signal with a Python handler is written (uvicorn's supervisor has some for
            # SIGHUP, SIGTTIN...): only a stop is one.
            self._heard = not STOP_SIGNALS.isdisjoint(numbers)
        return self._heard

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)


class ProcessKeeper:
    """A thread that restarts the children that die (with a backoff while one keeps dying at
    once) until `stopping` is set (by the gateway's stop, or by the keeper itself when a child
    exits with a code a restart would repeat: `on_fatal(child)` is called then) or `signalled()`
    says a SIGTERM or SIGINT came: then the keeper sets `stopping` itself, which is also what
    stops uvicorn's supervisor of the workers (its own note of the signal may come late)."""

    def __init__(
        self,
        children: list[Child],
        *,
        stopping: threading.Event,
        signalled: Callable[[], bool],
        fatal_exit_codes: frozenset[int],
        on_fatal: Callable[[Child], None],
    ) -> None:
        self._children = children
        self._signalled = signalled
        self._fatal = fatal_exit_codes
        self._on_fatal = on_fatal
        self._stopping = stopping
        self._stop_children = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-keeper", daemon=True)
        self._delays = {child.name: FIRST_RESTART_SECONDS for child in children}
        self._restart_at: dict[str, float] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No more restarts, and every child stopped, the last in the list first. Called once
        the workers have stopped: `stopping` alone (a SIGTERM) stops no child."""
        self._stopping.set()
        self._stop_children.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(CHECK_SECONDS):
            if self._signalled():
                # uvicorn's supervisor, which would have said "Received SIGTERM", may stop
                # before its handler's note is read: the log says why the stop began.
                log.info("stop_signal_received")
                self._stopping.set()
                break
            for child in self._children:
                if not child.alive():
                    self._revive(child)
            flush_logs()
        # For PR_SET_PDEATHSIG (gateway/orphans.py) a child's parent is the thread that
        # started it, not the process: a child restarted here is signalled the moment this
        # thread ends. So the thread lives until stop() (the workers, still answering their
        # last requests, need the writer) and stops them itself, in order: the writer, first
        # in the list, after the deliver process that still sends it its last calls.
        self._stop_children.wait()
        for child in reversed(self._children):
            child.stop()

    def _revive(self, child: Child) -> None:
        if self._stopping.is_set() or self._signalled():
            return
        now = time.monotonic()
        due = self._restart_at.get(child.name)
        if due is None:
            code = child.exitcode
            log.error("process_died", process=child.name, exit_code=code)
            if code in self._fatal:
                self._stopping.set()
                self._on_fatal(child)
                return
            delay = self._delays[child.name]
            if now - child.started_at >= STEADY_SECONDS:
                delay = FIRST_RESTART_SECONDS
            self._delays[child.name] = min(delay * 2, MAX_RESTART_SECONDS)
            if code in ASKED_TO_STOP_EXIT_CODES:
                # Someone asked it to stop. When that was a signal to the whole process group,
                # `signalled()` says so by now (the same signal reached this process), and
                # surely within this grace: no restart then.
                delay = max(delay, CLEAN_EXIT_GRACE_SECONDS)
            self._restart_at[child.name] = now + delay
            return
        if now < due:
            return
        del self._restart_at[child.name]
        child.start()
        log.info("process_restarted", process=child.name, pid=_pid(child))


def _pid(child: Child) -> int | None:
    return None if child.process is None else child.process.pid


def private_directory() -> Path:
    """A directory only this user can enter, for the writer's socket and the metrics files.
    Short (/tmp), since a Unix socket's path has at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="finrelay-"))
    os.chmod(path, 0o700)
    return path

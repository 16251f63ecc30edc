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


class ProcessKeeper:
    """A thread that restarts the children that die (with a backoff while one keeps dying at
    once) until `stopping` is set (by the gateway's stop, or by the keeper itself when a child
    exits with a code a restart would repeat: `on_fatal(child)` is called then) or `signalled()`
    says a SIGTERM or SIGINT came."""

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
            if code == 0:
                # A clean stop: someone asked for it. When that was a SIGTERM to the whole
                # process group, this process has heard it too, or will within this grace
                # (its main thread may be slow to run the handler on a busy machine).
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

"""The processes of `gateway serve` (docs/reference/processes.md): `server.workers` identical
processes, each receiving and delivering, that share nothing but the store.

    finrelay serve: supervisor      holds the port, starts the workers, restarts one that dies
    ├── finrelay serve: worker 1    ingress, dispatcher, health, metrics, /admin
    └── finrelay serve: worker 2    the same, on the same socket and the same store

With one worker there is no supervisor: the one process does everything. The store is where the
workers coordinate (leases, `max_in_flight`, circuits, pauses, ordering), whether it is SQLite's
file or PostgreSQL, so the picture is the same for both, and for several nodes.

uvicorn's own supervisor keeps the workers (its health checks, its restart of a worker that
dies, its stop on SIGTERM or SIGINT). What this module adds: each worker's number, found
through a lock file per number (a restarted worker takes the number its predecessor let go of,
since the kernel drops a dead process's locks), each process's role on its command line
(`setproctitle`), the directory where the workers add up their metrics, and a worker that stops
when its supervisor is killed (`die_with_parent`), so that a new gateway gets the port.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import setproctitle

__all__ = [
    "WORKER_CONFIG_ENV",
    "WORKER_PARENT_ENV",
    "WORKER_ROLE_ENV",
    "WORKER_RUN_ENV",
    "name_process",
    "run_directory",
    "take_worker_number",
]

# What a worker reads of its supervisor's settings (gateway/app.py `worker_settings`): the
# config file, the supervisor's pid, the role (which `serve --role` may have set over the
# file's) and this run's directory.
WORKER_CONFIG_ENV: Final = "FINRELAY_WORKER_CONFIG"
WORKER_PARENT_ENV: Final = "FINRELAY_WORKER_PARENT"
WORKER_ROLE_ENV: Final = "FINRELAY_WORKER_ROLE"
WORKER_RUN_ENV: Final = "FINRELAY_RUN_DIRECTORY"

TITLE_PREFIX: Final = "finrelay serve"
# More numbers than workers: a worker whose predecessor has not quite let go of its lock (it
# is still stopping) takes the next free one rather than wait.
_MAX_NUMBER: Final = 1024
# Held for the life of the process: closing the file would let go of its number.
_number_lock: list[int] = []


def name_process(role: str) -> None:
    """Put this process's role on its command line, as `ps` shows it: `finrelay serve: worker
    2`. The role is what tells them apart; the pid and the arguments are in the log."""
    setproctitle.setproctitle(f"{TITLE_PREFIX}: {role}")


@contextlib.contextmanager
def run_directory() -> Iterator[Path]:
    """A directory of this run's, only this user's, gone after it: the workers' number locks
    and, under `metrics/`, their counters, which any worker adds up for /metrics
    (prometheus_client's multiprocess mode). Its path travels to the workers in the
    environment."""
    path = Path(tempfile.mkdtemp(prefix="finrelay-"))
    os.chmod(path, 0o700)
    metrics = path / "metrics"
    metrics.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    os.environ[WORKER_RUN_ENV] = str(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def take_worker_number(directory: Path) -> int:
    """The lowest worker number no live process holds, held by this one until it exits."""
    for number in range(1, _MAX_NUMBER + 1):
        descriptor = os.open(directory / f"worker-{number}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        _number_lock.append(descriptor)
        return number
    return 0  # a thousand live workers: not a machine this runs on; no number then

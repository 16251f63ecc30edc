"""A real PostgreSQL for the tests: a temporary cluster (`initdb`) on 127.0.0.1 and a free port,
started and stopped by the tests, in its own process group like the brokers
(tests/queues/brokers.py): `stop()` is PostgreSQL's fast shutdown, `kill()` a crash (SIGKILL to
the postmaster and every backend), and `start()` again brings the same cluster back on the same
port with its data.

Debian's `postgresql` package (.ci/run installs it) puts the programs in
/usr/lib/postgresql/<major>/bin. initdb and postgres refuse to run as root: as root, the cluster
belongs to the `postgres` user the package creates, in a directory of its own under /tmp (the
pytest temporary directories are root's, mode 0700). Missing programs skip the tests, except
under CI=true, where they fail.

The cluster asks for a password (scram-sha-256) and the password needs percent-encoding in a
URL: every test URL carries a secret that must never show in a log line or an error.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.service.harness import free_port

IN_CI = os.environ.get("CI") == "true"
USER = "finrelay"
BOOT_SECONDS = 30.0


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major, reverse=True)
    if not found:
        message = "PostgreSQL is not installed (.ci/run installs Debian's postgresql)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return Path(found[0]).parent


def _major(path: str) -> int:
    return int(Path(path).parent.parent.name.split(".")[0])


class PostgresServer:
    """One temporary cluster; `url(database)` is libpq's URL for a database in it."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.port = free_port()
        # Letters a URL must percent-encode (`@`, `/`, `:`, `%`): libpq decodes them.
        self.password = f"pw@{secrets.token_hex(6)}/:%"
        self.as_root = os.geteuid() == 0
        self.workdir = Path(tempfile.mkdtemp(prefix="finrelay-pg-"))
        self.data = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0
        if self.as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
        self._initdb()

    def _as_owner(self) -> dict[str, object]:
        """Popen's arguments that run a program as the cluster's owner: PostgreSQL's own
        programs refuse root. (Set by the child before exec, so its pid is the program's: no
        wrapper such as runuser stands between a signal and the postmaster.)"""
        if not self.as_root:
            return {}
        return {"user": "postgres", "group": "postgres", "extra_groups": []}

    def _initdb(self) -> None:
        password_file = self.workdir / "password"
        password_file.write_text(self.password + "\n")
        if self.as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",  # a test cluster: the tests' own commits still fsync
            ],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self.workdir,
            **self._as_owner(),  # type: ignore[arg-type]
        )
        password_file.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.workdir}'\n"
                "max_connections = 300\nshared_buffers = 64MB\n"
            )

    @property
    def url(self) -> str:
        """The URL of the `postgres` database (the one every cluster has)."""
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        password = quote(self.password, safe="")
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                **self._as_owner(),  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + BOOT_SECONDS
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = self.log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"PostgreSQL did not start in {BOOT_SECONDS} s:\n{text}")
            time.sleep(0.1)
        return self

    def ready(self) -> bool:
        probe = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            capture_output=True,
            check=False,
        )
        return probe.returncode == 0

    def create_database(self) -> str:
        """A new, empty database; its URL. Each test that needs a clean store takes one."""
        import psycopg

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend: a crash, no shutdown code runs."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._wait_stopped()

    def stop(self) -> None:
        """PostgreSQL's fast shutdown (SIGINT: backends end, a checkpoint), SIGKILL if it hangs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._wait_stopped()

    def _wait_stopped(self, timeout: float = 10.0) -> None:
        # A killed postmaster's backends may outlive it for a moment, holding the port.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.ready():
            time.sleep(0.05)

    def shutdown(self) -> None:
        """Stop for good and delete the cluster: no shutdown checkpoint for a cluster about to
        be deleted (after hundreds of CREATE DATABASE it took 10-47 s)."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

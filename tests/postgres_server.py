"""A real PostgreSQL for the tests: a temporary cluster (`initdb`) on 127.0.0.1 and a free port,
started and stopped by the tests, a server process group like the brokers (tests/queues/
brokers.py's `BrokerProcess`): `stop()` is PostgreSQL's fast shutdown, `kill()` a crash
(SIGKILL to the postmaster and every backend), and `start()` again brings the same cluster back
on the same port with its data.

Debian's `postgresql` package (.ci/run installs it) puts the programs in
/usr/lib/postgresql/<major>/bin. initdb and postgres refuse to run as root: as root, the cluster
belongs to the `postgres` user the package creates, in a directory of its own under /tmp (the
pytest temporary directories are root's, mode 0700). Missing programs skip the tests, except
under CI=true, where they fail.

The cluster asks for a password (scram-sha-256) and the password needs percent-encoding in a
URL: every test URL carries a secret that must never show in a log line or an error.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.queues.brokers import IN_CI, BrokerProcess

USER = "finrelay"


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


class PostgresServer(BrokerProcess):
    """One temporary cluster; `url_of(database)` is libpq's URL for a database in it."""

    name = "postgres"
    boot_seconds = 30.0
    # SIGTERM would be PostgreSQL's "smart" shutdown, which waits for every client to leave.
    stop_signal = signal.SIGINT

    def __init__(self) -> None:
        self.bin = _bin_dir()
        # Letters a URL must percent-encode (`@`, `/`, `:`, `%`): libpq decodes them.
        self.password = f"pw@{secrets.token_hex(6)}/:%"
        self.as_root = os.geteuid() == 0
        super().__init__(Path(tempfile.mkdtemp(prefix="finrelay-pg-")))
        self.data = self.workdir / "data"
        self._databases = 0
        if self.as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
        self._initdb()

    def popen_options(self) -> dict[str, Any]:
        """Run as the cluster's owner: PostgreSQL's own programs refuse root. (Set by the child
        before exec, so its pid is the program's: no wrapper such as runuser stands between a
        signal and the postmaster.)"""
        if not self.as_root:
            return {}
        return {"user": "postgres", "group": "postgres", "extra_groups": []}

    def command(self) -> list[str]:
        return [str(self.bin / "postgres"), "-D", str(self.data)]

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
            **self.popen_options(),
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

    def shutdown(self) -> None:
        """Stop for good and delete the cluster: no shutdown checkpoint for a cluster about to
        be deleted (after hundreds of CREATE DATABASE it took 10-47 s)."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

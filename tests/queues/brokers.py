"""Real brokers for the queue tests: redis-server, nats-server (JetStream) and RabbitMQ, each on
127.0.0.1, free ports and a temporary data directory, started and stopped by the tests.

Each server runs in its own process group, so `stop()` (SIGTERM, then SIGKILL) and `kill()`
(SIGKILL, as in a crash) take every process it started along (RabbitMQ's beam and its
helpers), and `start()` again brings the same server back on the same port with its data. A
broker whose program is missing is skipped, except under CI=true, where it is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Self

import pytest

from tests.service.harness import free_port

IN_CI = os.environ.get("CI") == "true"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def require(program: str) -> str:
    """The path of `program`; skipped without it, a failure under CI=true."""
    path = program if os.path.isabs(program) and os.access(program, os.X_OK) else None
    path = path or shutil.which(program)
    if path is None:
        message = f"{program} is not installed (.ci/run installs it from Debian)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class BrokerProcess:
    """One server process (group): `start` waits until it accepts connections on `port`.
    (tests/postgres_server.py's PostgreSQL is one too.)"""

    name = "broker"
    boot_seconds = 20.0
    # What asks the server for its own orderly shutdown.
    stop_signal = signal.SIGTERM

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        return _accepts(self.port)

    def popen_options(self) -> dict[str, Any]:
        """More of Popen's arguments (the user to run as, say)."""
        return {}

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
                **self.popen_options(),
            )
        deadline = time.monotonic() + self.boot_seconds
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = self.log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"{self.name} did not start in {self.boot_seconds} s:\n{log_text}")
            time.sleep(0.1)
        return self

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL to every process of the server: no shutdown code runs."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._wait_port_free()

    def stop(self) -> None:
        """`stop_signal` (the server's own orderly shutdown), SIGKILL if it takes too long."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        # Whatever of the group is left (RabbitMQ's helpers outlive the script).
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._wait_port_free()

    def shutdown(self) -> None:
        """Stop for good, with anything started alongside."""
        self.stop()

    def _wait_port_free(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while _accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


class RedisServer(BrokerProcess):
    name = "redis"

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        super().__init__(workdir)
        self.password = password  # the server asks for it (`requirepass`)

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        # appendfsync always: an XADD acknowledged is on disk, so a SIGKILL loses no entry.
        return [
            require("redis-server"),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--protected-mode", "no",
            *(["--requirepass", self.password] if self.password else []),
        ]  # fmt: skip


class NatsServer(BrokerProcess):
    name = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            require("nats-server"),
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-js",
            "-sd", str(self.workdir / "jetstream"),
        ]  # fmt: skip


class RabbitServer(BrokerProcess):
    """RabbitMQ with its own node name, ports, mnesia, logs and config in `workdir`, and its
    own epmd (on its own port, started and stopped with it)."""

    name = "rabbitmq"
    boot_seconds = 120.0  # several seconds alone; far more on a loaded machine

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"finrelay-test-{self.port}@localhost"
        self.epmd: subprocess.Popen[bytes] | None = None
        (workdir / "home").mkdir(exist_ok=True)
        (workdir / "enabled_plugins").write_text("[].\n")
        (workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            # Tests fill no disk: the default free-space alarm would only block publishers on a
            # nearly full /tmp.
            "disk_free_limit.absolute = 1MB\n"
        )

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"

    def command(self) -> list[str]:
        return [require(RABBITMQ_SERVER)]

    def environment(self) -> dict[str, str]:
        base = self.workdir
        return {
            **os.environ,
            "HOME": str(base / "home"),  # the Erlang cookie goes there
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),  # none: no /etc
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        }

    def start(self) -> Self:
        if self.epmd is None or self.epmd.poll() is not None:
            # Our own epmd, in the foreground, so that stopping it is ours too (RabbitMQ would
            # otherwise start a daemon that outlives the test run).
            self.epmd = subprocess.Popen(
                [require("epmd"), "-port", str(self.epmd_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + 10
            while not _accepts(self.epmd_port) and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().start()

    def shutdown(self) -> None:
        """The server and its epmd."""
        self.stop()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(timeout=10)

"""`gateway serve` as a real subprocess on a free loopback port, for black-box tests."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tests.support import SECRET, TOKEN

REPO = Path(__file__).resolve().parents[2]

# Every adapter once, with the test secret or token, a file subscriber and a route to it.
BASE_CONFIG = f"""
[server]
host = "127.0.0.1"
port = 0
max_body_bytes = 1048576

[store]
url = "sqlite:///./data/gateway.db"

[sources.finaegis]
adapter = "finaegis"
secret = "{SECRET}"

[sources.finexer]
adapter = "finexer"
secret = "{SECRET}"

[sources.finfusion-main]
adapter = "finfusion"
secret = "{SECRET}"

[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"

[sources.lifecycle]
adapter = "account_lifecycle"
token = "{TOKEN}"
currency = "NGN"

[sources.finchpay-walled]
adapter = "finchpay"
token = "{TOKEN}"
allow_ips = ["203.0.113.0/24"]

[subscribers.audit]
kind = "file"
path = "./data/events.jsonl"

[[routes]]
subscribers = ["audit"]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class GatewayProcess:
    """One gateway process in its own working directory (its ./data is the store)."""

    def __init__(
        self,
        workdir: Path,
        config: str = BASE_CONFIG,
        env: Mapping[str, str] | None = None,
        serve_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.serve_args = list(serve_args)
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / "gateway.log"
        self.env = {**os.environ, **(env or {})}
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.workdir / "data" / "gateway.db"

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        self.port = free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--port",
                    str(self.port),
                    *self.serve_args,
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, "PYTHONPATH": str(REPO)},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway not ready in {timeout} s:\n{self.log_path.read_text()}")

    def post(self, source: str, body: bytes, **kwargs: object) -> httpx.Response:
        return httpx.post(f"{self.base_url}/webhooks/{source}", content=body, timeout=10, **kwargs)  # type: ignore[arg-type]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM and wait: the graceful path."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logs_once_they_say(self, text: str, timeout: float = 5.0) -> str:
        """The log once `text` is in it: the gateway writes its log lines every 200 ms."""
        deadline = time.monotonic() + timeout
        while text not in (logs := self.logs()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout} s")
            time.sleep(0.05)
        return logs

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Read the store directly, as an operator with sqlite3 would."""
        with sqlite3.connect(self.database) as db:
            return db.execute(sql, params).fetchall()

    def gateway_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args, "--config", str(self.config_path)],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**self.env, "PYTHONPATH": str(REPO)},
        )

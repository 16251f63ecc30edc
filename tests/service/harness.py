"""`gateway serve` as a real subprocess on a free loopback port, for black-box tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import httpx

from gateway.config import load_config
from gateway.store import Store, open_store
from gateway.store.base import (
    Backlog,
    DeadLetter,
    EventFilter,
    EventRecord,
    EventRow,
    QuarantinedPayload,
)
from gateway.store.sqlite import sqlite_path_from_url
from tests.support import SECRET, TOKEN

T = TypeVar("T")

# Page size of the helpers that walk the store's keyset pages to the end.
PAGE = 500

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


# How many processes `gateway serve` runs. Most service tests run the gateway in one process
# (`one_process`: quick to start, one pid to kill); `default` is what `gateway serve` does with
# nothing said (gateway/processes.py: a supervisor and `server.workers` identical workers),
# which tests/service/test_processes.py and the modules parametrized by LAYOUTS run.
Layout = Literal["one_process", "default"]
LAYOUTS: tuple[Layout, ...] = ("one_process", "default")
LAYOUT_ARGS: dict[Layout, tuple[str, ...]] = {
    "one_process": ("--workers", "1"),
    "default": (),
}


class GatewayProcess:
    """One gateway process in its own working directory (its ./data is the store)."""

    def __init__(
        self,
        workdir: Path,
        config: str = BASE_CONFIG,
        env: Mapping[str, str] | None = None,
        serve_args: Sequence[str] = (),
        layout: Layout = "one_process",
    ) -> None:
        self.workdir = workdir
        # A test's own serve_args come after the layout's, and win (argparse keeps the last).
        self.serve_args = [*LAYOUT_ARGS[layout], *serve_args]
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / "gateway.log"
        # TMPDIR: the run directory `gateway serve` makes (gateway/processes.py) lands in the
        # test's own directory, so a test that kills it with SIGKILL leaves nothing in /tmp.
        self.env = {**os.environ, "TMPDIR": str(workdir), **(env or {})}
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.workdir / "data" / "gateway.db"

    def start(self, timeout: float = 20.0, port: int | None = None) -> GatewayProcess:
        """Start `gateway serve` on `port` (a free one when None) and wait for its /readyz."""
        self.port = port or free_port()
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

    # The store, read through its interface (gateway/store/base.py) as an operator's command
    # reads it, so that the same test reads SQLite and PostgreSQL alike. Each helper opens the
    # store, reads and closes it: poll them at 50 ms or slower, and read many events in one
    # call (`event_records`) rather than one call per event.

    @property
    def store_url(self) -> str:
        """The gateway's own `[store] url`, a relative SQLite path made the gateway's (the
        test process runs elsewhere)."""
        url = load_config(self.config_path, self.env).store.url.reveal()
        if url.startswith("sqlite:///"):
            return f"sqlite:///{self.workdir / sqlite_path_from_url(url)}"
        return url

    def with_store(self, use: Callable[[Store], Awaitable[T]]) -> T:
        """`use(store)` on the gateway's store, opened for it and closed after, in one short
        event loop of its own."""

        async def run() -> T:
            store = open_store(self.store_url)
            await store.open()
            try:
                return await use(store)
            finally:
                await store.close()

        return asyncio.run(run())

    def stats(self) -> dict[str, int]:
        """Counts: events, pending, held, delivered, dead, quarantined (waiting)."""
        return self.with_store(lambda store: store.stats())

    def events(self, filters: EventFilter | None = None) -> list[EventRow]:
        """Every stored event `filters` keeps (all of them by default), newest first, with the
        state of its deliveries by subscriber."""
        return self.with_store(lambda store: _all_events(store, filters or EventFilter()))

    def event_record(self, event_id: str) -> EventRecord | None:
        """One event with its deliveries and their attempts; None when it is not stored."""
        return self.with_store(lambda store: store.event_record(event_id))

    def event_records(self, event_ids: Iterable[str] | None = None) -> dict[str, EventRecord]:
        """The records of `event_ids` (those stored), by id; of every stored event when None."""

        async def read(store: Store) -> dict[str, EventRecord]:
            ids = (
                [row.id for row in await _all_events(store, EventFilter())]
                if event_ids is None
                else list(event_ids)
            )
            records = {}
            for event_id in ids:
                record = await store.event_record(event_id)
                if record is not None:
                    records[event_id] = record
            return records

        return self.with_store(read)

    def quarantined(self) -> list[QuarantinedPayload]:
        """Payloads waiting in quarantine (not yet released), oldest first."""
        return list(self.with_store(lambda store: store.quarantined()))

    def dead_letters(self, subscriber: str | None = None) -> list[DeadLetter]:
        """Every dead delivery (to `subscriber` only, if given), newest first."""

        async def read(store: Store) -> list[DeadLetter]:
            dead: list[DeadLetter] = []
            while page := await store.dead_letter_page(
                subscriber=subscriber,
                after=(dead[-1].dead_at, dead[-1].delivery_id) if dead else None,
                limit=PAGE,
            ):
                dead += page
            return dead

        return self.with_store(read)

    def delivery_backlog(self) -> dict[str, Backlog]:
        """Per subscriber with undelivered deliveries: how many, how many held, the oldest."""
        return self.with_store(lambda store: store.delivery_backlog())

    def paused_subscribers(self) -> set[str]:
        return self.with_store(lambda store: store.paused_subscribers())

    def save_subscriber_circuit(self, subscriber: str, state: bytes) -> None:
        """Set a subscriber's stored circuit, whatever it was (as `gateway enable` does)."""
        self.with_store(
            lambda store: store.save_subscriber_circuit(subscriber, state, expected_version=None)
        )

    def sqlite_query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """SQL on the gateway's SQLite file, committed: only for what the store interface has
        no way to ask or do (each call says why). A SQLite gateway's test only."""
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


async def _all_events(store: Store, filters: EventFilter) -> list[EventRow]:
    """Every event `filters` keeps, walking the store's keyset pages to the end."""
    rows: list[EventRow] = []
    while page := await store.search_events(
        filters, after=(rows[-1].received_at, rows[-1].id) if rows else None, limit=PAGE
    ):
        rows += page
    return rows

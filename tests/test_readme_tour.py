"""The README's "Five minutes with it", run as a user runs it: in a directory holding the
shipped config/gateway.toml and the project's .venv, `make run`'s command, the README's shell
lines as written, its config added to the end of the file, its consumer saved as consumer.py;
then the curl calls of the README and of docs/reference/admin.md against that gateway. Only the
port (8080 may be taken) and the Redis address are the test's own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.queues.brokers import RedisServer
from tests.service.harness import free_port
from tests.test_docs import DOCS, README, ROOT, fenced_code, marked_block

TOUR_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.shutdown()


class Tour:
    """The user's directory and terminal 1's gateway."""

    def __init__(self, workdir: Path, port: int, redis_url: str) -> None:
        self.workdir = workdir
        self.port = port
        self.redis_url = redis_url
        self.process: subprocess.Popen[bytes] | None = None
        (workdir / ".venv").symlink_to(ROOT / ".venv")
        (workdir / "config").mkdir()
        shipped = (ROOT / "config" / "gateway.toml").read_text()
        assert "\nport = 8080 " in shipped
        self.config = workdir / "config" / "gateway.toml"
        self.config.write_text(shipped.replace("\nport = 8080 ", f"\nport = {port} "))

    def as_the_test_runs_it(self, text: str) -> str:
        return text.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}").replace(
            TOUR_REDIS, self.redis_url
        )

    def make_run(self) -> None:
        """What `make run` runs (tests/test_docs.py checks the Makefile says so)."""
        log = (self.workdir / "gateway.log").open("ab")
        self.process = subprocess.Popen(
            [".venv/bin/gateway", "serve", "--config", "config/gateway.toml"],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.logs()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).is_success:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready:\n{self.logs()}")

    def ctrl_c(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            assert self.process.wait(timeout=30) == 0, self.logs()

    def file_lines(self) -> list[str]:
        path = self.workdir / "data" / "events.jsonl"
        return path.read_text().splitlines() if path.exists() else []

    def logs(self) -> str:
        return (self.workdir / "gateway.log").read_text(errors="replace")

    def terminal(self, code: str) -> str:
        """Shell lines as written, in the user's directory; any failing line fails the tour."""
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", self.as_the_test_runs_it(code)],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"},
        )
        assert result.returncode == 0, f"{code}\n{result.stdout}\n{result.stderr}\n{self.logs()}"
        return result.stdout


def wait_until(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"not within 30 s: {what}"
        time.sleep(0.1)


def json_values(output: str) -> list[Any]:
    """The JSON answers curl printed one after the other (it adds no newline)."""
    decoder, at = json.JSONDecoder(), 0
    values: list[Any] = []
    while at < len(output.rstrip()):
        value, at = decoder.raw_decode(output, at)
        values.append(value)
        at += len(output[at:]) - len(output[at:].lstrip())
    return values


def readme_code(name: str, language: str) -> str:
    return fenced_code(marked_block(README, name), language)


def test_the_five_minute_tour_runs_as_written(tmp_path: Path, redis_server: RedisServer) -> None:
    workdir = tmp_path / "finrelay"
    workdir.mkdir()
    tour = Tour(workdir, free_port(), redis_server.url)
    assert readme_code("tour-run", "sh").split("#")[0].strip() == "make run"
    try:
        # A provider in, a subscriber out.
        tour.make_run()
        post_twice, tail = readme_code("tour-provider", "sh").strip().rsplit("\n", 1)
        assert [line.split()[1] for line in post_twice.splitlines()] == ["sample", "sample"]
        tour.terminal(post_twice)
        # A person types the next line a moment later; the deliveries are on their way.
        wait_until(lambda: len(tour.file_lines()) >= 2, "both deliveries in the file")
        deliveries = [json.loads(line) for line in tour.terminal(tail).splitlines()]
        assert [d["event"]["provider"] for d in deliveries] == ["finfusion", "finchpay"]
        assert [d["event"]["type"] for d in deliveries] == ["payment.succeeded"] * 2
        assert all(d["webhook-id"] == d["event"]["id"] for d in deliveries)
        tour.ctrl_c()

        # A queue consumer, and the admin token.
        snippet = readme_code("tour-config", "toml")
        assert TOUR_REDIS in snippet
        with tour.config.open("a") as config:
            config.write("\n" + tour.as_the_test_runs_it(snippet))
        (workdir / "consumer.py").write_text(
            tour.as_the_test_runs_it(readme_code("tour-consumer", "python"))
        )
        tour.make_run()
        post, consume = readme_code("tour-queue", "sh").strip().split("\n")
        tour.terminal(post)
        with redis.Redis.from_url(redis_server.url) as client:
            wait_until(lambda: client.xlen("finrelay:events") >= 1, "the payment in the stream")
        lines = tour.terminal(consume).splitlines()
        assert len(lines) == 1, lines  # the one payment since Redis was added
        entry_id, event_id, event_type, amount = lines[0].split(" ", 3)
        assert re.fullmatch(r"\d+-\d+", entry_id)
        assert event_id.startswith("evt_")
        assert event_type == "payment.succeeded"
        assert "'currency'" in amount

        # The admin page's API: the README's calls, then the reference page's.
        output = tour.terminal(readme_code("tour-admin", "sh"))
        subscribers, events = json_values(output)
        assert {s["name"] for s in subscribers} == {"audit-log", "ledger-stream"}
        assert events["items"][0]["id"] == event_id
        token = re.search(r'token = "([^"]+)"', snippet)
        assert token
        admin_curl = fenced_code(marked_block(DOCS / "reference" / "admin.md", "admin-curl"), "sh")
        assert admin_curl.startswith("TOKEN=...")
        output = tour.terminal(admin_curl.replace("TOKEN=...", f"TOKEN={token.group(1)}", 1))
        answers = json_values(output)
        assert len(answers) == 5, answers
        succeeded, next_page, replayed, paused, resumed = answers
        assert len(succeeded["items"]) == 3  # every sample was a payment.succeeded
        assert len(next_page["items"]) == 2  # the events after the newest
        assert replayed == {"replayed": 2}  # the newest went to the file and to Redis
        assert paused == {"name": "audit-log", "state": "paused"}
        assert resumed == {"name": "audit-log", "state": "active"}
        assert (workdir / ".venv").is_symlink()
    finally:
        tour.ctrl_c()

"""A gateway whose stdout is a pipe nobody reads still answers webhooks promptly: its log lines
are dropped (and counted in /metrics), never waited for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from adapters.samples import sample_body
from tests.service.harness import BASE_CONFIG, REPO, free_port
from tests.support import TOKEN

REQUESTS = 2_000
# Per request, and for all of them: a gateway blocked on its stdout answers none.
ANSWER_SECONDS = 5.0
ALL_SECONDS = 180.0


def dropped_log_lines(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("finrelay_log_lines_dropped_total"):
            return float(line.split()[-1])
    return 0.0


def test_a_stdout_nobody_reads_does_not_stall_ingress(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(BASE_CONFIG)
    port = free_port()
    with (tmp_path / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                "gateway.toml",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,  # never read: once the pipe is full, a write would block
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=ANSWER_SECONDS) as client:
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, (tmp_path / "stderr.log").read_text()
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.05)

            started = time.monotonic()
            slowest = 0.0
            for n in range(REQUESTS):
                sent = time.monotonic()
                answer = client.post(
                    "/webhooks/finchpay",
                    params={"token": TOKEN},
                    content=sample_body("finchpay", "COMPLETE", datetime.now(UTC)),
                )
                assert answer.status_code == 200, (n, answer.text)
                slowest = max(slowest, time.monotonic() - sent)
                assert time.monotonic() - started < ALL_SECONDS
            assert slowest < ANSWER_SECONDS

            # The drops reach /metrics with the next log flush (every 200 ms).
            deadline = time.monotonic() + 5
            while dropped_log_lines(client.get("/metrics").text) == 0:
                assert time.monotonic() < deadline, "no dropped log line counted"
                time.sleep(0.1)
        # And it stops when told to, without waiting for the pipe either.
        process.terminate()
        assert process.wait(timeout=20) == 0
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()

"""Nothing acknowledged is ever lost: kill -9 at random moments, and a full disk."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from adapters.samples import sample_body
from tests.service.harness import GatewayProcess
from tests.support import TOKEN


def _post_until(stop: threading.Event, gateway: GatewayProcess, acknowledged: list[str]) -> None:
    """Post new events until told to stop; remember every id that got a 200."""
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
            try:
                response = client.post(
                    f"{gateway.base_url}/webhooks/finchpay", content=body, params={"token": TOKEN}
                )
            except httpx.TransportError:
                time.sleep(0.01)  # the server is down or restarting: the provider would retry
                continue
            if response.status_code == 200:
                acknowledged.append(response.json()["id"])


def test_kill_9_at_random_moments_loses_no_acknowledged_event(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    acknowledged: list[str] = []
    rng = random.Random(os.getpid())
    try:
        for _ in range(4):
            stop = threading.Event()
            clients = [
                threading.Thread(target=_post_until, args=(stop, gateway, acknowledged))
                for _ in range(8)
            ]
            for client in clients:
                client.start()
            time.sleep(rng.uniform(0.3, 1.2))
            gateway.kill()  # mid-request, mid-commit: wherever it is
            stop.set()
            for client in clients:
                client.join(timeout=10)
            gateway.start()
    finally:
        gateway.stop()

    assert len(acknowledged) > 50, "the load did not run; the test proves nothing"
    events = gateway.events()
    stored = {row.id for row in events}
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged events were lost"
    assert len(acknowledged) == len(set(acknowledged)), "an event was acknowledged twice"
    orphaned = [row.id for row in events if not row.deliveries]
    assert orphaned == [], "an event was stored without its deliveries"
    print(f"acknowledged {len(acknowledged)} events over 4 kills; all stored once")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real disk that can really fill up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs under CI: {mounted.stderr.decode()}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _log_lines_dropped(gateway: GatewayProcess) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("finrelay_log_lines_dropped_total "):
            return float(line.split()[1])
    raise AssertionError("finrelay_log_lines_dropped_total is not in /metrics")


def test_full_disk_answers_503_and_recovers(tiny_disk: Path) -> None:
    gateway = GatewayProcess(tiny_disk).start()
    try:
        first = gateway.post(
            "finchpay",
            sample_body("finchpay", "COMPLETE", datetime.now(UTC)),
            params={"token": TOKEN},
        )
        assert first.status_code == 200

        filler = tiny_disk / "filler"
        # Unbuffered: a buffered file that failed a write would fail again when it is closed,
        # flushing what it still held (seen once in a fresh-clone run: OSError at `with`'s end).
        with filler.open("wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
            except OSError:
                pass  # ENOSPC: the disk is full
        # The log file's last page may still have room (the log shares the disk): fill it
        # too, with newlines only, so that the next log line really finds the disk full.
        with gateway.log_path.open("ab", buffering=0) as log:
            try:
                while True:
                    log.write(b"\n" * 512)
            except OSError:
                pass

        answers = [
            gateway.post(
                "finchpay",
                sample_body("finchpay", "COMPLETE", datetime.now(UTC)) + b" " * 200_000,
                params={"token": TOKEN},
            )
            for _ in range(3)
        ]
        assert 503 in {answer.status_code for answer in answers}
        for answer in answers:
            if answer.status_code == 503:
                assert answer.json() == {"error": "unavailable"}
        # The log is on the full disk too: its lines are dropped, and counted, not raised.
        deadline = time.monotonic() + 5
        while _log_lines_dropped(gateway) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _log_lines_dropped(gateway) > 0

        filler.unlink()
        recovered = gateway.post(
            "finchpay",
            sample_body("finchpay", "COMPLETE", datetime.now(UTC)),
            params={"token": TOKEN},
        )
        assert recovered.status_code == 200
    finally:
        gateway.stop()

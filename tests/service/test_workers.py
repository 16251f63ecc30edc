"""`gateway serve --workers N`: several processes on one port and one store, seen from outside.

What must hold whichever worker a request lands on: every event stored once (a retry racing
the original on another worker is still a duplicate), /metrics counting every worker's
requests, every delivery made, whole log lines, and no worker left behind when the gateway
stops or is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest

from adapters.samples import sample_body
from tests.service.harness import GatewayProcess
from tests.support import TOKEN

WORKERS = 2


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path, serve_args=["--workers", str(WORKERS)]).start()
    try:
        yield process
    finally:
        process.stop()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found |= {int(child) for child in (task / "children").read_text().split()}
        except OSError:
            continue
    return found


def _workers(gateway: GatewayProcess) -> set[int]:
    """The worker processes: children of the gateway that serve (not multiprocessing's
    resource tracker)."""
    assert gateway.process is not None
    return {
        pid
        for pid in _children(gateway.process.pid)
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    }


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _post(gateway: GatewayProcess, body: bytes) -> httpx.Response:
    # A new connection per request, so the kernel hands requests to both workers.
    return gateway.post("finchpay", body, params={"token": TOKEN})


def _accepted_in_metrics(gateway: GatewayProcess) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("finrelay_webhooks_answered_total{") and 'outcome="accepted"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_gateway_runs_that_many_worker_processes(gateway: GatewayProcess) -> None:
    assert len(_workers(gateway)) == WORKERS


def test_events_posted_to_every_worker_are_stored_once_and_counted_once(
    gateway: GatewayProcess,
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    bodies = [
        sample_body("finchpay", "COMPLETE", start + timedelta(microseconds=n)) for n in range(300)
    ]
    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(lambda body: _post(gateway, body), bodies))

    assert {response.status_code for response in responses} == {200}
    ids = [response.json()["id"] for response in responses]
    assert [response.json()["status"] for response in responses] == ["accepted"] * 300
    assert len(set(ids)) == 300
    stored = {row.id for row in gateway.events()}
    assert stored == set(ids)
    # Each scrape is answered by one worker or the other; every one adds up both.
    for _ in range(6):
        assert _accepted_in_metrics(gateway) == 300


def test_the_same_event_racing_on_both_workers_is_accepted_once(
    gateway: GatewayProcess,
) -> None:
    for _ in range(3):
        copies = [sample_body("finchpay", "COMPLETE", datetime.now(UTC))] * 20
        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(lambda body: _post(gateway, body), copies))
        statuses = sorted(response.json()["status"] for response in responses)
        assert statuses == ["accepted"] + ["duplicate"] * 19
        assert len({response.json()["id"] for response in responses}) == 1


def test_every_event_is_delivered_and_every_log_line_is_whole(
    gateway: GatewayProcess,
) -> None:
    bodies = [sample_body("finchpay", "COMPLETE", datetime.now(UTC)) for _ in range(400)]
    with ThreadPoolExecutor(16) as pool:
        ids = {response.json()["id"] for response in pool.map(lambda b: _post(gateway, b), bodies)}

    deliveries = gateway.workdir / "data" / "events.jsonl"
    deadline = time.monotonic() + 30
    delivered: list[str] = []
    while time.monotonic() < deadline:
        if deliveries.exists():
            lines = deliveries.read_bytes().splitlines()
            delivered = [msgspec.json.decode(line)["webhook-id"] for line in lines]
            if set(delivered) >= ids:
                break
        time.sleep(0.1)
    assert set(delivered) >= ids, f"{len(ids - set(delivered))} events were not delivered"
    # Both workers' dispatchers claim from the one store, under leases: none sent twice.
    assert len(delivered) == len(set(delivered))

    # Each worker writes its lines every 200 ms; wait for all 400 request lines.
    deadline = time.monotonic() + 10
    while True:
        records = [msgspec.json.decode(line) for line in gateway.logs().splitlines()]
        # (a cut or interleaved line would not have parsed)
        logged = {record.get("event_id") for record in records if record["event"] == "webhook"}
        if logged >= ids or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert logged >= ids


def test_sigterm_stops_every_worker(gateway: GatewayProcess) -> None:
    workers = _workers(gateway)
    assert gateway.stop() == 0
    assert not any(_alive(pid) for pid in workers)


def test_workers_stop_when_the_gateway_is_killed(gateway: GatewayProcess) -> None:
    workers = _workers(gateway)
    gateway.kill()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)  # not to leave them to the next test
    assert not left, "orphaned workers went on serving after the gateway was killed"


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_a_bad_worker_count_is_a_usage_error(tmp_path: Path, value: str) -> None:
    gateway = GatewayProcess(tmp_path)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(gateway.config_path),
            "--workers",
            value,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 2
    assert "--workers" in completed.stderr

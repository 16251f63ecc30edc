"""`gateway serve` starting and stopping: a busy port, the address it listens on, start-up checks
and the exit status of a clean stop (README: Command line)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from adapters.samples import sample_body
from gateway.preflight import PORT_WAIT_SECONDS
from tests.service.harness import BASE_CONFIG, REPO, GatewayProcess
from tests.support import TOKEN

EXIT_CANNOT_LISTEN = 4


def serve(
    workdir: Path, config: str, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`gateway serve` expected to stop by itself (it cannot start)."""
    workdir.mkdir(exist_ok=True)
    (workdir / "gateway.toml").write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", "gateway.toml", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def log_lines(text: str) -> list[dict[str, object]]:
    return [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_busy_for_good_is_waited_for_then_one_json_error_line_and_exit_4(
    tmp_path: Path, workers: int
) -> None:
    """docs/reference/processes.md: up to 10 s for the port (an earlier gateway may be going away),
    said once in the log; then one error line naming the address, and exit 4."""
    (tmp_path / "first").mkdir()
    first = GatewayProcess(tmp_path / "first").start()
    started = time.monotonic()
    try:
        result = serve(
            tmp_path / "second", BASE_CONFIG, "--port", str(first.port), "--workers", str(workers)
        )
    finally:
        first.stop()
    assert time.monotonic() - started >= PORT_WAIT_SECONDS
    assert result.returncode == EXIT_CANNOT_LISTEN, result.stdout + result.stderr
    assert result.stderr == ""  # no plain-text [Errno 98]
    # JSON lines only: no `started`, no `stopped`.
    waiting, line = log_lines(result.stdout)
    assert waiting["level"] == "warning"
    assert waiting["event"] == "waiting_for_port"
    assert waiting["address"] == f"127.0.0.1:{first.port}"
    assert line["level"] == "error"
    assert line["event"] == "cannot_listen"
    assert line["address"] == f"127.0.0.1:{first.port}"
    assert "in use" in str(line["error"])


def test_the_first_log_line_says_where_it_listens_with_the_port_it_got(tmp_path: Path) -> None:
    # port = 0 in the config: the system picks, and only the log can tell which.
    (tmp_path / "gateway.toml").write_text(BASE_CONFIG)
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", "gateway.toml"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    try:
        deadline = time.monotonic() + 20
        while b'"listening"' not in log_path.read_bytes():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "no listening line in 20 s"
            time.sleep(0.05)
        listening = next(
            line for line in log_lines(log_path.read_text()) if line["event"] == "listening"
        )
        port = listening["port"]
        assert isinstance(port, int)
        assert port > 0
        assert listening["host"] == "127.0.0.1"
        assert listening["address"] == f"127.0.0.1:{port}"
        while True:  # bound: the deadline above
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready at the logged port"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def post_one_event(gateway: GatewayProcess) -> None:
    body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    response = gateway.post("finchpay", body, params={"token": TOKEN})
    assert response.status_code == 200, response.text


def test_sigterm_stops_one_process_cleanly_with_exit_0(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path).start()
    try:
        post_one_event(gateway)
    finally:
        code = gateway.stop()
    assert code == 0, gateway.logs()[-3000:]  # not 143, the signal's own status
    assert '"stopped"' in gateway.logs()


def test_sigterm_stops_the_workers_with_exit_0(tmp_path: Path) -> None:
    # (The parent of `--workers N` exited 0 before this change too: it is uvicorn's supervisor,
    # which handles SIGTERM itself; kept so that both ways of serving are held to it.)
    gateway = GatewayProcess(tmp_path, serve_args=("--workers", "2")).start()
    try:
        post_one_event(gateway)
    finally:
        code = gateway.stop()
    assert code == 0, gateway.logs()[-3000:]
    # Each worker's last line is written before it ends, not left in its log buffer.
    assert gateway.logs().count('"stopped"') == 2, gateway.logs()[-3000:]


def test_a_missing_file_subscriber_directory_stops_the_start(tmp_path: Path) -> None:
    config = BASE_CONFIG.replace('path = "./data/events.jsonl"', 'path = "./missing/events.jsonl"')
    assert config != BASE_CONFIG
    result = serve(tmp_path, config, "--port", "0", timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    # A problem of the config file, said as check-config says it, before anything starts.
    assert log_lines(result.stdout) == []
    assert "subscribers.audit.path: the directory 'missing' does not exist" in result.stderr
    assert not (tmp_path / "missing").exists()  # nothing created, at start or later


def test_a_file_where_the_subscriber_directory_should_be_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("not a directory")
    config = BASE_CONFIG.replace('path = "./data/events.jsonl"', 'path = "./out/events.jsonl"')
    result = serve(tmp_path, config, "--port", "0", timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "subscribers.audit.path: 'out' is not a directory" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_file_subscriber_directory_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir(mode=0o500)
    config = BASE_CONFIG.replace('path = "./data/events.jsonl"', 'path = "./out/events.jsonl"')
    result = serve(tmp_path, config, "--port", "0", timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not writable" in result.stdout

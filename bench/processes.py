"""What `gateway serve`'s processes cost and how fast they come back: for each git tree (by
default this checkout), interleaved, `--rounds` times each:

- start:    seconds from launching `gateway serve` to the first 200 on /readyz;
- idle:     the summed Pss (MB) of its whole process tree after `--idle` seconds with no
            traffic, and how many processes that is;
- restart:  20 webhooks acknowledged, `kill -9` of the gateway's first process, a new `gateway
            serve` started at once on the same port and data (what a process manager does):
            seconds from the kill to the first webhook answered 200 once every process of the
            killed gateway has ended (so the answer is the new one's), and whether every event
            acknowledged before the kill is still in the store;
- stop:     SIGTERM: the exit code, the seconds to exit, and how many processes were left.

The baseline is the same tree with `--workers 1` (one process, the smallest the gateway can
be), measured in the same rounds: each figure of the default layout is printed as a ratio to
it. Compare another tree (an earlier commit) with `--tree`:

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/processes.py --tree /tmp/before --tree .

Each tree runs under this virtualenv's interpreter with its own packages first on the path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench._common import (
    FILE_SUBSCRIBER,
    HOST,
    exit_on_sigterm,
    free_port,
    gateway_config,
    machine_line,
    median,
    process_tree,
    proportional_kib,
    provider_webhook,
    scratch,
)

SERVE = (sys.executable, "-m", "gateway", "serve")
ACKNOWLEDGED_BEFORE_KILL = 20
# Every wait is bounded: a gateway that does not come back is a failed round, not a hang.
WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Round:
    start_seconds: float
    idle_pss_mb: float
    processes: int
    restart_seconds: float  # nan: the new gateway exited instead (`restart_code`)
    restart_code: int | None
    kept_every_event: bool
    stop_code: int
    stop_seconds: float
    left_behind: int


def launch(tree: Path, workdir: Path, port: int, workers: str) -> subprocess.Popen[bytes]:
    log = (workdir / "gateway.log").open("ab")
    with log:
        return subprocess.Popen(
            [*SERVE, "--config", "gateway.toml", "--port", str(port), "--workers", workers],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(tree)},
        )


def status_of(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def wait_for(predicate: Callable[[], bool], what: str) -> float:
    """Seconds until `predicate()` is true; RuntimeError after WAIT_SECONDS."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > WAIT_SECONDS:
            raise RuntimeError(f"{what}: not within {WAIT_SECONDS} s")
        time.sleep(0.01)
    return time.monotonic() - started


def post_webhook(port: int, index: int) -> tuple[int, str]:
    _, body, headers, target = provider_webhook(index, datetime.now(UTC))
    headers = {**headers, "content-type": "application/json"}
    request = urllib.request.Request(f"http://{HOST}:{port}{target}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            answer = response.read()
            return int(response.status), answer.decode()
    except urllib.error.HTTPError as error:
        return int(error.code), ""
    except OSError:
        return 0, ""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def processes_in(workdir: Path) -> int:
    """Running processes whose working directory is `workdir` (the gateway and its children)."""
    target = os.path.realpath(workdir)
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if os.readlink(entry / "cwd") == target and state != "Z":
                    count += 1
    return count


def one_round(tree: Path, workdir: Path, workers: str, idle: float) -> Round:
    workdir.mkdir(parents=True)
    (workdir / "data").mkdir()
    (workdir / "gateway.toml").write_text(gateway_config(FILE_SUBSCRIBER))
    port = free_port()
    ready_url = f"http://{HOST}:{port}/readyz"
    launched = time.monotonic()
    gateway = launch(tree, workdir, port, workers)
    try:
        wait_for(lambda: status_of(ready_url) == 200, "ready")
        start_seconds = time.monotonic() - launched
        time.sleep(idle)
        pss_kib, _ = proportional_kib(gateway.pid)
        processes = len(process_tree(gateway.pid))
        acknowledged = 0
        for index in range(ACKNOWLEDGED_BEFORE_KILL):
            status, _ = post_webhook(port, index)
            acknowledged += status == 200
        old = set(process_tree(gateway.pid))
        killed_at = time.monotonic()
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(timeout=10)
        gateway = launch(tree, workdir, port, workers)
        index = ACKNOWLEDGED_BEFORE_KILL
        while True:
            # Only the new gateway's answer counts: the old one's workers may still answer
            # while they go away.
            old_gone = not any(alive(pid) for pid in old)
            status, _ = post_webhook(port, index)
            index += 1
            if status == 200 and old_gone:
                break
            if gateway.poll() is not None:
                break  # the new gateway gave up (exit 4: the port was still taken)
            if time.monotonic() - killed_at > WAIT_SECONDS:
                raise RuntimeError(f"no webhook accepted within {WAIT_SECONDS} s of the restart")
            time.sleep(0.01)
        restart_seconds = time.monotonic() - killed_at
        restart_code = gateway.poll()
        if restart_code is not None:
            gateway = launch(tree, workdir, port, workers)  # started again, to measure the stop
            restart_seconds = float("nan")
        with contextlib.closing(sqlite3.connect(workdir / "data" / "gateway.db")) as db:
            (stored,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
        kept = acknowledged == ACKNOWLEDGED_BEFORE_KILL and stored >= acknowledged
        wait_for(lambda: status_of(ready_url) == 200, "ready after the restart")
        stopping = time.monotonic()
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(timeout=WAIT_SECONDS)
        stop_seconds = time.monotonic() - stopping
        time.sleep(1.0)  # whatever is left after a second was left behind
        left = processes_in(workdir)
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait(timeout=10)
    return Round(
        start_seconds=start_seconds,
        idle_pss_mb=pss_kib / 1024,
        processes=processes,
        restart_seconds=restart_seconds,
        restart_code=restart_code,
        kept_every_event=kept,
        stop_code=code,
        stop_seconds=stop_seconds,
        left_behind=left,
    )


def restart_exits(rounds: list[Round]) -> str:
    codes = [r.restart_code for r in rounds if r.restart_code is not None]
    return f"; the new gateway exited {codes} in {len(codes)} of {len(rounds)}" if codes else ""


def summary(rounds: list[Round]) -> dict[str, float]:
    return {
        "start_seconds": median([r.start_seconds for r in rounds]),
        "idle_pss_mb": median([r.idle_pss_mb for r in rounds]),
        "processes": median([float(r.processes) for r in rounds]),
        "restart_seconds": median([r.restart_seconds for r in rounds]),
        "stop_seconds": median([r.stop_seconds for r in rounds]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before Pss")
    parser.add_argument("--workers", default="auto", help='the layout measured ("auto")')
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--keep", action="store_true", help="keep the working directories")
    args = parser.parse_args()
    exit_on_sigterm()
    trees = [tree.resolve() for tree in (args.tree or [Path(__file__).resolve().parents[1]])]
    rounds = 1 if args.quick else args.rounds
    print(machine_line("processes.py"))
    print(f"# {rounds} round(s), interleaved; baseline: the same tree with --workers 1")
    layouts = [("one process (baseline)", "1"), (f"--workers {args.workers}", args.workers)]
    results: dict[tuple[Path, str], list[Round]] = {}
    with scratch(args.keep, "processes") as directory:
        for number in range(rounds):
            for tree in trees:
                for name, workers in layouts:
                    workdir = directory / f"{tree.name}-{workers}-{number}"
                    measured = one_round(tree, workdir, workers, args.idle)
                    results.setdefault((tree, name), []).append(measured)
                    print(f"# round {number + 1} {tree} {name}: {measured}", flush=True)
    print()
    print(
        "| tree | layout | /readyz after launch (s) | idle Pss (MB) | processes"
        " | kill -9 + restart -> 200 (s) | every acknowledged event kept"
        " | SIGTERM: exit code, seconds, processes left |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for tree in trees:
        base = summary(results[(tree, layouts[0][0])])
        for name, _ in layouts:
            measured = results[(tree, name)]
            figures = summary(measured)
            ratio = {key: figures[key] / base[key] if base[key] else float("nan") for key in base}
            codes = sorted({r.stop_code for r in measured})
            left = max(r.left_behind for r in measured)
            print(
                f"| {tree.name} | {name} | {figures['start_seconds']:.2f}"
                f" ({ratio['start_seconds']:.2f}x) | {figures['idle_pss_mb']:.0f}"
                f" ({ratio['idle_pss_mb']:.2f}x) | {figures['processes']:.0f}"
                f" | {figures['restart_seconds']:.2f} ({ratio['restart_seconds']:.2f}x)"
                f"{restart_exits(measured)}"
                f" | {all(r.kept_every_event for r in measured)}"
                f" | {codes}, {figures['stop_seconds']:.2f}, {left} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU per webhook of the request path: from uvicorn's parse to the 200, the store left out.

Starts `gateway serve` with bench/_free_store.py's store (`accept` writes nothing) and no routes
(so no dispatcher is woken), saturates it with wrk for --seconds, and divides the CPU the
gateway process used meanwhile (user + system, every thread: the log writer's too, from
/proc/<pid>/stat) by the requests it answered. That figure depends less on what else the
machine runs than requests/s does: use it to A/B one change to the request path.

Each `--tree DIR` is a checkout of the repository (by default this one); the trees run
interleaved, --runs times each, and the medians are printed. For example, to compare the
committed code with the working tree:

    git archive HEAD | tar -x -C /tmp/base
    .venv/bin/python bench/request_path.py --tree /tmp/base --tree .

On a shared machine (two vCPUs are often one core's hyperthreads) it still moves with the
neighbours' load by +-15%: compare medians of interleaved runs, and the minimums.
`--in-process` takes the network and wrk out: each tree's app is served by uvicorn's own
httptools protocol on a uvloop loop, in one process, fed one request at a time
through a transport that only keeps what is written, and the process's CPU per request is
printed (the log writer's thread included), with the number of writes per response.
`--callgrind` counts the instructions of that same run instead (valgrind, user space only,
minutes per run: the difference between --requests and a tenth of it, so start-up is left out).
Neither counts the kernel's side of a write: the write count shows that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# A worker (--in-process) serves the tree it was asked for: its packages, not this checkout's.
sys.path.insert(
    0, os.environ.get("FINRELAY_REQUEST_PATH_TREE") or str(Path(__file__).resolve().parents[1])
)

from bench._common import (
    FILE_SUBSCRIBER,
    ensure_wrk,
    exit_on_sigterm,
    gateway_config,
    gateway_service,
    machine_line,
    median,
    provider_requests,
    run_wrk,
    scratch,
    write_wrk_inputs,
)

# Enough for several seconds of wrk without a request sent twice (a duplicate is cheaper).
REQUESTS_PER_SECOND_BOUND = 8_000


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far, every thread, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def measure(
    tree: Path, directory: Path, wrk: str, seconds: float, connections: int
) -> tuple[float, float, float]:
    """(user and system CPU microseconds per answered request, requests/s) of one gateway
    from `tree`."""
    requests = provider_requests(int(seconds * REQUESTS_PER_SECOND_BOUND) + 2_000)
    # Every request once: the first 2,000 warm the process up (imports, caches, series).
    (directory / "warmup").mkdir(parents=True)
    warmup = write_wrk_inputs(directory / "warmup", requests[:2_000], threads=1)
    script = write_wrk_inputs(directory, requests[2_000:], threads=1)
    config = gateway_config(FILE_SUBSCRIBER)
    config = config[: config.index("[[routes]]")]
    gateway = gateway_service(directory / "gateway", config, workers=1)
    gateway.argv[1:4] = [str(tree / "bench" / "_free_store.py")]
    gateway.start()
    try:
        run_wrk(wrk, gateway.url + "/", warmup, threads=1, connections=connections, duration=1)
        user, system = cpu_times(gateway.pid)
        figures = run_wrk(
            wrk, gateway.url + "/", script, threads=1, connections=connections, duration=seconds
        )
        user_after, system_after = cpu_times(gateway.pid)
    finally:
        gateway.stop()
    if figures["status"] or figures["wraps"]:
        raise RuntimeError(f"{tree}: non-2xx {figures['status']:.0f}, wraps {figures['wraps']}")
    answered = figures["requests"]
    rate = answered / (figures["duration_us"] / 1e6)
    return (user_after - user) / answered * 1e6, (system_after - system) / answered * 1e6, rate


class _KeptWrites(asyncio.Transport):
    """What uvicorn's protocol is given for a connection: it keeps what is written, and says
    when a whole response (head and `content-length` bytes of body) has come."""

    def __init__(self) -> None:
        super().__init__()
        self.received = bytearray()
        self.writes = 0
        self.answered: asyncio.Future[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        self.received += data
        head, found, body = bytes(self.received).partition(b"\r\n\r\n")
        if not found:
            return
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        if len(body) >= length and self.answered is not None:
            self.answered.set_result(head + found + body)
            self.received.clear()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        return

    def resume_reading(self) -> None:
        return

    def close(self) -> None:
        raise RuntimeError("the protocol closed the connection")


def serve_in_process(count: int) -> tuple[float, float]:
    """(CPU microseconds per request, writes per response) of `count` requests served one at a
    time by this process's tree: the gateway app with a store that writes nothing, behind
    uvicorn's httptools protocol on uvloop."""
    import uvicorn
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from bench._common import FILE_SUBSCRIBER, gateway_config, provider_requests
    from gateway.app import build_app
    from gateway.config import load_config
    from gateway.logs import configure_logging
    from gateway.store import open_store
    from gateway.store.base import AcceptOutcome, NewEvent

    async def accept_nothing(event: NewEvent) -> AcceptOutcome:
        return "accepted"

    directory = Path(tempfile.mkdtemp(prefix="finrelay-request-path-"))
    subscriber = FILE_SUBSCRIBER.replace("./data/", f"{directory}/")
    config_text = gateway_config(subscriber, f"sqlite:///{directory}/gateway.db")
    config_path = directory / "gateway.toml"
    config_path.write_text(config_text[: config_text.index("[[routes]]")])
    config = load_config(config_path)
    configure_logging()
    store = open_store(config.store.url.reveal())
    store.accept = accept_nothing  # type: ignore[method-assign]
    # Warm-up requests: imports, caches, each source's metric series.
    warmup = 500
    requests = provider_requests(warmup + count)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    # As `gateway serve` configures uvicorn (gateway/cli/serve.py).
    server = uvicorn.Config(
        build_app(config, store),
        http="httptools",
        loop="none",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    server.load()
    protocol = HttpToolsProtocol(
        config=server, server_state=ServerState(), app_state={}, _loop=loop
    )
    transport = _KeptWrites()
    protocol.connection_made(transport)

    async def drive(batch: list[bytes]) -> None:
        for raw in batch:
            transport.answered = loop.create_future()
            protocol.data_received(raw)
            answer = await transport.answered
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(answer.decode(errors="replace"))

    loop.run_until_complete(drive(requests[:warmup]))
    writes = transport.writes
    started = time.process_time()
    loop.run_until_complete(drive(requests[warmup:]))
    used = time.process_time() - started
    return used / count * 1e6, (transport.writes - writes) / count


def in_process_worker(count: int) -> None:
    # The gateway's log lines go to stdout (fd 1): the figures go to the parent on another fd.
    result = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    cpu, writes = serve_in_process(count)
    os.write(result, json.dumps({"cpu_us": cpu, "writes": writes}).encode())


def run_in_process(tree: Path, count: int, callgrind: Path | None = None) -> dict[str, float]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", str(count)]
    if callgrind is not None:
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}", *argv]
    completed = subprocess.run(
        argv, cwd=tree, capture_output=True, check=False, timeout=3600, env=_tree_env(tree)
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{tree}: {completed.stderr.decode(errors='replace')[-3000:]}")
    figures: dict[str, float] = json.loads(completed.stdout.decode().strip().splitlines()[-1])
    if callgrind is not None:
        totals = next(
            line for line in callgrind.read_text().splitlines() if line.startswith("totals:")
        )
        figures["instructions"] = float(totals.split()[1])
    return figures


def _tree_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "FINRELAY_REQUEST_PATH_TREE": str(tree), "PYTHONHASHSEED": "0"}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        in_process_worker(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", help="a checkout (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--in-process", action="store_true", help="no network, no wrk")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request")
    parser.add_argument("--requests", type=int, default=20_000, help="with --in-process")
    arguments = parser.parse_args()
    exit_on_sigterm()
    trees = [tree.resolve() for tree in arguments.tree or [Path(__file__).resolve().parents[1]]]
    print(machine_line("bench/request_path.py"))
    if arguments.callgrind:
        compare_instructions(trees, arguments.requests, arguments.runs)
        return
    if arguments.in_process:
        compare_in_process(trees, arguments.requests, arguments.runs)
        return
    wrk = ensure_wrk()
    results: dict[Path, list[tuple[float, float, float]]] = {tree: [] for tree in trees}
    with scratch(arguments.keep, "request-path") as directory:
        for run in range(arguments.runs):
            for number, tree in enumerate(trees):
                user, system, rate = measure(
                    tree,
                    directory / f"{run}-{number}",
                    wrk,
                    arguments.seconds,
                    arguments.connections,
                )
                results[tree].append((user, system, rate))
                print(
                    f"run {run + 1} {tree}: {user + system:6.1f} us CPU/request (user"
                    f" {user:5.1f}, system {system:5.1f})  {rate:5.0f} requests/s"
                )
    # Other work on the machine only ever adds to a run's CPU (caches, contention): the
    # minimum is printed beside the median.
    print()
    for tree, figures in results.items():
        cpus = sorted(user + system for user, system, _ in figures)
        users = [user for user, _, _ in figures]
        systems = [system for _, system, _ in figures]
        print(
            f"{tree}: median {median(cpus):.1f} us CPU/request (min {cpus[0]:.1f}; user"
            f" {median(users):.1f}, system {median(systems):.1f}),"
            f" {median([rate for _, _, rate in figures]):.0f} requests/s"
        )


def compare_in_process(trees: list[Path], count: int, runs: int) -> None:
    results: dict[Path, list[dict[str, float]]] = {tree: [] for tree in trees}
    for run in range(runs):
        for tree in trees:
            figures = run_in_process(tree, count)
            results[tree].append(figures)
            print(
                f"run {run + 1} {tree}: {figures['cpu_us']:6.1f} us CPU/request,"
                f" {figures['writes']:.2f} writes/response"
            )
    print()
    for tree, all_figures in results.items():
        cpus = sorted(figures["cpu_us"] for figures in all_figures)
        print(
            f"{tree}: median {median(cpus):.1f} us CPU/request (min {cpus[0]:.1f}, max"
            f" {cpus[-1]:.1f}), {all_figures[0]['writes']:.2f} writes/response"
        )


def compare_instructions(trees: list[Path], count: int, runs: int) -> None:
    """Instructions per request: (a run of `count` - a run of count/10) / (0.9 count), which
    leaves out the start (imports, config, warm-up)."""
    small = count // 10
    with tempfile.TemporaryDirectory(prefix="finrelay-callgrind-") as directory:
        for tree in trees:
            per_request = []
            for run in range(runs):
                big = run_in_process(tree, count, Path(directory) / f"big.{run}")
                little = run_in_process(tree, small, Path(directory) / f"small.{run}")
                per_request.append((big["instructions"] - little["instructions"]) / (count - small))
            print(
                f"{tree}: {median(per_request):,.0f} instructions/request"
                f" ({', '.join(f'{value:,.0f}' for value in per_request)})"
            )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

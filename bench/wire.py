"""CPU per call on the writer process's wire, and per accept in the writer, across git trees.

Two measurements per tree, each in fresh processes (spawned, as `gateway serve` spawns its
children), the trees interleaved --runs times, medians printed:

  calls:  a RemoteStore client (one process, --concurrency calls at once) against a
          WriterServer whose store answers `accept` at once without writing: the CPU of the
          client and of the server per call, i.e. what the wire itself costs each end
          (frames, parsing, futures, deadlines, tasks).
  writer: a RemoteStore client sending `accept`s paced at --rate per second to the real writer
          process (`run_writer_process`, SQLite in a fresh temporary directory): the writer
          process's CPU per accept (user + system, every thread). Paced, not saturated: a
          saturated writer commits huge batches, which hides what each commit costs.

Each `--tree DIR` is a checkout of the repository (by default this one). To compare the
committed code with the working tree:

    git archive HEAD | tar -x -C /tmp/base
    .venv/bin/python bench/wire.py --tree /tmp/base --tree .

CPU per call is steadier than calls per second on a shared machine, but still moves with the
neighbours' load: compare medians of interleaved runs.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

# A child (spawned: it imports this module again) serves the tree it was asked for: its
# packages, not this checkout's, which bench._common would otherwise import first.
sys.path.insert(0, os.environ.get("FINRELAY_WIRE_TREE") or str(Path(__file__).resolve().parents[1]))

from bench._common import exit_on_sigterm, machine_line, median

_TREE_ENV = "FINRELAY_WIRE_TREE"

BODY = b'{"payload":"' + b"x" * 1500 + b'"}'


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_free_store(socket_path: str) -> None:
    """A WriterServer whose store writes nothing (the wire alone), on uvloop as the writer."""
    import uvloop

    from gateway.store.writer_process import WriterServer

    class FreeStore:
        async def accept(self, event: Any) -> str:
            return "accepted"

    async def serve() -> None:
        server = WriterServer(FreeStore(), Path(socket_path))  # type: ignore[arg-type]
        await server.start()
        await asyncio.sleep(3600)

    uvloop.run(serve())


def serve_writer(database: str, socket_path: str) -> None:
    from gateway.store.writer_process import run_writer_process

    run_writer_process(f"sqlite:///{database}", socket_path, os.getppid())


def send_accepts(
    socket_path: str, calls: int, concurrency: int, rate: float, answers: Queue[Any]
) -> None:
    """`calls` accepts of distinct events; paced at `rate`/s when rate > 0, on uvloop as a
    worker runs. Puts the client's own CPU seconds per call."""
    import uvloop

    from gateway.store.base import NewEvent
    from gateway.store.remote import RemoteStore

    async def send() -> float:
        store = RemoteStore(Path(socket_path))
        await store.open()
        room = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(number: int) -> None:
            if rate:
                await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
            async with room:
                await store.accept(
                    NewEvent(
                        id=f"evt_{number}",
                        source="bench",
                        type="payment.succeeded",
                        received_at=time.time(),
                        body=BODY,
                        subscribers=("audit",),
                    )
                )

        cpu = time.process_time()
        await asyncio.gather(*(one(number) for number in range(calls)))
        used = time.process_time() - cpu
        await store.close()
        return used / calls

    answers.put(uvloop.run(send()))


def measure(tree: Path, kind: str, arguments: argparse.Namespace) -> tuple[float, float]:
    """(client CPU us per call, server CPU us per call) for one tree."""
    context = multiprocessing.get_context("spawn")
    os.environ[_TREE_ENV] = str(tree)  # the children's (spawned now, with this environment)
    with tempfile.TemporaryDirectory(prefix="finrelay-wire-") as directory:
        socket_path = str(Path(directory) / "writer.sock")
        if kind == "calls":
            server = context.Process(target=serve_free_store, args=(socket_path,))
            calls, rate = arguments.calls, 0.0
        else:
            database = str(Path(directory) / "gateway.db")
            server = context.Process(target=serve_writer, args=(database, socket_path))
            calls, rate = int(arguments.rate * arguments.seconds), arguments.rate
        server.start()
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(socket_path):
                if time.monotonic() > deadline or not server.is_alive():
                    raise RuntimeError(f"{tree}: the server did not start")
                time.sleep(0.02)
            answers: Queue[Any] = context.Queue()
            assert server.pid is not None
            before = process_cpu(server.pid)
            client = context.Process(
                target=send_accepts,
                args=(socket_path, calls, arguments.concurrency, rate, answers),
            )
            client.start()
            client_seconds = answers.get(timeout=600)
            client.join(60)
            server_seconds = (process_cpu(server.pid) - before) / calls
        finally:
            server.kill()
            server.join(10)
    return client_seconds * 1e6, server_seconds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", help="a checkout (repeatable)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=40_000, help="calls per 'calls' run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=2_000.0, help="accepts/s to the writer")
    parser.add_argument("--seconds", type=float, default=5.0, help="of each 'writer' run")
    arguments = parser.parse_args()
    exit_on_sigterm()
    trees = [tree.resolve() for tree in arguments.tree or [Path(__file__).resolve().parents[1]]]
    print(machine_line("bench/wire.py"))
    figures: dict[tuple[Path, str], list[tuple[float, float]]] = {}
    for run in range(1, arguments.runs + 1):
        for kind in ("calls", "writer"):
            for tree in trees:
                client, server = measure(tree, kind, arguments)
                figures.setdefault((tree, kind), []).append((client, server))
                print(f"run {run} {kind:6} {tree}: client {client:6.1f}, server {server:6.1f} us")
    print(f"\nmedians over {arguments.runs} runs (CPU per call, user + system)")
    first = trees[0]
    for kind, label in (
        ("calls", f"wire, free store, {arguments.concurrency} at once"),
        ("writer", f"writer process, SQLite, paced at {arguments.rate:.0f}/s"),
    ):
        base = median([server for _, server in figures[(first, kind)]])
        for tree in trees:
            client = median([c for c, _ in figures[(tree, kind)]])
            server = median([s for _, s in figures[(tree, kind)]])
            print(
                f"{label:45} {tree}: client {client:6.1f} us, server {server:6.1f} us"
                f" ({server / base:.2f} x the first tree's server)"
            )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

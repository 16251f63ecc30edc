"""Where `gateway serve` spends its CPU under ingest load: py-spy, summarized.

Starts the gateway as `bench/ingest.py` does (SQLite store, every adapter as a source, one route
to a file subscriber), saturates it with wrk for --seconds, and meanwhile samples every process
of the gateway with `py-spy record --format raw` (collapsed stacks). Prints, per process and
thread, its share of the samples, then the functions with the most samples (inclusive, and
self) over all of them. This is the evidence behind the README's "what limits it".

py-spy is not a dependency of the gateway: the script uses the one beside the interpreter or on
PATH, and otherwise says how to install it and exits 2.

    .venv/bin/python bench/profile.py                 # 8 s of wrk, 100 samples/s
    .venv/bin/python bench/profile.py --keep          # also keeps the raw stacks (profile.txt)

Two experiments that bound what the gateway could reach, printed with the same wrk figure:
`--no-routes` (events are stored but go to no subscriber: ingest alone) and `--free-store`
(bench/_free_store.py: `accept` writes nothing, so neither storing nor delivery costs anything;
one worker only).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    FILE_SUBSCRIBER,
    add_workers_option,
    ensure_wrk,
    exit_on_sigterm,
    gateway_config,
    gateway_service,
    machine_line,
    process_tree,
    provider_requests,
    run_wrk,
    scratch,
    write_wrk_inputs,
)


def ensure_py_spy() -> str | None:
    """py-spy beside this interpreter or on PATH; None (and how to install it) when missing.

    Nothing is installed from here: the uv-made venv has no pip, and the venv is uv.lock's.
    """
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found:
        return found
    print(
        "py-spy not found: put it on PATH (`pipx install py-spy`, `cargo install py-spy`) or\n"
        f"  .uv/bin/uv pip install --python {sys.executable} py-spy",
        file=sys.stderr,
    )
    return None


def start_recorders(
    py_spy: str,
    pids: list[int],
    directory: Path,
    rate: int,
    *,
    seconds: float | None = None,
    idle: bool = False,
) -> list[subprocess.Popen[bytes]]:
    """One `py-spy record` per process, its collapsed stacks to `directory`/profile.PID.txt,
    for `seconds` or until `stop_recorders`."""
    recorders = []
    for pid in pids:
        argv = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--threads"]
        argv += ["--rate", str(rate), "--output", str(directory / f"profile.{pid}.txt")]
        argv.append("--nonblocking")
        if seconds is not None:
            argv += ["--duration", f"{seconds:g}"]
        if idle:
            argv.append("--idle")
        recorders.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return recorders


def stop_recorders(recorders: list[subprocess.Popen[bytes]]) -> None:
    """Ctrl-C to each recorder (py-spy writes its stacks then), and wait for it."""
    for recorder in recorders:
        if recorder.poll() is None:
            recorder.send_signal(signal.SIGINT)
    for recorder in recorders:
        try:
            recorder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()


def read_stacks(pids: list[int], directory: Path) -> dict[int, list[tuple[str, int]]]:
    stacks: dict[int, list[tuple[str, int]]] = {}
    for pid in pids:
        path = directory / f"profile.{pid}.txt"
        if not path.exists():
            continue
        lines = []
        for line in path.read_text().splitlines():
            stack, _, samples = line.rpartition(" ")
            if samples.isdigit():
                lines.append((stack, int(samples)))
        stacks[pid] = lines
    return stacks


def summarize(
    stacks: dict[int, list[tuple[str, int]]],
    top: int,
    *,
    rate: int | None = None,
    events: int | None = None,
) -> None:
    """Shares of the samples per process and thread, then by function. With the sampling `rate`
    and a count of `events`, also the CPU microseconds each costs per event (samples / rate:
    py-spy counts a thread only while it is not idle)."""
    total = sum(count for lines in stacks.values() for _, count in lines)
    if not total:
        print("no samples")
        return
    cost = ""
    if rate and events:
        cost = f", {total / rate / events * 1e6:.0f} us of CPU per event over {events} events"
    print(f"\n{total} samples{cost}")

    def share(count: int) -> str:
        if rate and events:
            return f"{count / total:6.1%} {count / rate / events * 1e6:6.0f} us"
        return f"{count / total:6.1%}"

    print("\nby process and thread:")
    for pid, lines in stacks.items():
        threads: collections.Counter[str] = collections.Counter()
        for stack, count in lines:
            threads[stack.split(";", 1)[0]] += count
        for thread, count in threads.most_common():
            print(f"  {pid:>7} {share(count)}  {thread[:90]}")
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for lines in stacks.values():
        for stack, count in lines:
            frames = stack.split(";")[1:]
            for frame in set(frames):
                inclusive[frame] += count
            if frames:
                own[frames[-1]] += count
    print(f"\ntop {top} inclusive:")
    for frame, count in inclusive.most_common(top):
        print(f"  {share(count)}  {frame[:110]}")
    print(f"\ntop {top} self:")
    for frame, count in own.most_common(top):
        print(f"  {share(count)}  {frame[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--idle", action="store_true", help="count idle (waiting) samples too")
    add_workers_option(parser)
    parser.add_argument("--no-routes", action="store_true", help="store, deliver nothing")
    parser.add_argument(
        "--free-store", action="store_true", help="accept writes nothing (bench/_free_store.py)"
    )
    parser.add_argument("--keep", action="store_true")
    arguments = parser.parse_args()
    exit_on_sigterm()
    print(machine_line("bench/profile.py"))
    wrk = ensure_wrk()
    py_spy = ensure_py_spy()
    if py_spy is None:
        sys.exit(2)
    count = int(arguments.seconds * 15_000)
    with scratch(arguments.keep, "finrelay-profile-") as directory:
        script = write_wrk_inputs(directory, provider_requests(count), threads=2)
        config = gateway_config(FILE_SUBSCRIBER)
        if arguments.no_routes:
            config = config[: config.index("[[routes]]")]
        gateway = gateway_service(directory / "gateway", config, workers=arguments.workers)
        if arguments.free_store:
            # One process, whatever --workers says (bench/_free_store.py).
            gateway.argv[1:4] = [str(Path(__file__).with_name("_free_store.py"))]
        gateway.start()
        try:
            pids = process_tree(gateway.pid)
            recorders = start_recorders(
                py_spy,
                pids,
                directory,
                arguments.rate,
                seconds=arguments.seconds,
                idle=arguments.idle,
            )
            time.sleep(0.5)
            figures = run_wrk(
                wrk,
                gateway.url + "/",
                script,
                threads=2,
                connections=arguments.connections,
                duration=arguments.seconds,
            )
            for recorder in recorders:
                recorder.wait(timeout=60)
        finally:
            gateway.stop()
        variant = " ".join(
            flag
            for flag, on in (
                (f"--workers {arguments.workers}", True),
                ("--no-routes", arguments.no_routes),
                ("--free-store", arguments.free_store),
            )
            if on
        )
        rate = figures.get("requests", 0) / arguments.seconds
        print(f"wrk: {rate:.0f} requests/s answered ({variant}; non-2xx {figures['status']:.0f})")
        summarize(read_stacks(pids, directory), arguments.top)
        if arguments.keep:
            print(f"\nraw stacks kept in {directory}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

"""A subscriber outage: ingest and memory while the backlog grows, then the drain rate.

One `gateway serve` (SQLite store in a fresh temporary directory, every adapter as a source, one
route to one HTTP subscriber "sink") while the subscriber is down:

  --down refused   nothing listens on its port (connection refused; the default)
  --down 503       bench/_servers.py's subscriber runs but answers 503 to everything

Meanwhile --events distinct signed provider webhooks arrive (closed loop, --connections,
five adapters round robin, signed just before each chunk). The first --baseline-events go into
the empty store: after 500 untimed warm-up events, the median rate of five chunks of them is the
no-backlog ingest rate of this run. Then, at every tenth of
--events, the script prints the gateway's RSS (VmRSS) and peak (VmHWM) from /proc/<pid>/status,
the chunk's ingest rate as a ratio to the no-backlog rate, and the queue depth
(`finrelay_delivery_queue_depth`). Then the subscriber comes back (the verifying subscriber
of bench/_servers.py) and the backlog drains: deliveries/s until the queue depth is 0.

Delivery settings of the sink (printed with the results), chosen so that the whole backlog is
due when the subscriber returns and nothing but the dispatcher's speed limits the drain:

  --circuit off (default): retry_schedule = [1] * 20 (the most retries a config may have; each
      1 s + up to 10% jitter) and circuit_breaker_failures = 0 (the circuit never opens). The
      dispatcher keeps trying the backlog during the outage, up to max_in_flight (64) at once:
      the worst case for ingest. A delivery tried 21 times during the outage is a dead letter
      (counted and printed; `gateway redrive` would send it again).
  --circuit on: retry_schedule as above, circuit_breaker_failures = 20 (the default) and
      circuit_breaker_seconds = 1: after 20 failures the circuit opens and only probes go out;
      when the subscriber is back, `gateway enable sink` closes the circuit at once (the probe
      pause doubles on every failure, so without it the drain could wait for minutes).

Targets: peak memory < 200 MB; ingest within 10% of the no-backlog rate. The no-backlog rate is
the median of five chunks of the first events, and the verdict takes the median chunk while the
backlog grows (the worst and the last are printed too): one short chunk's luck sets neither.
Memory is the gateway's whole process tree (the supervisor and its workers): the peak of
its summed Pss (each shared page divided among the processes sharing it) against the target;
the summed RSS, which counts the interpreter and libraries once per process, and the largest
process's RSS are printed beside it.

    .venv/bin/python bench/outage.py --quick            # 5,000 events, under a minute
    .venv/bin/python bench/outage.py --events 200000    # a few minutes
    .venv/bin/python bench/outage.py                    # 1,000,000 events: long
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    REPO,
    Metrics,
    Service,
    add_workers_option,
    closed_loop,
    code_changed_note,
    code_version,
    exit_on_sigterm,
    free_port,
    gateway_config,
    gateway_service,
    get_json,
    http_post,
    http_subscriber,
    machine_line,
    memory_kib,
    new_subscriber_secret,
    proportional_kib,
    provider_requests,
    scratch,
    subscriber_service,
)

TARGET_RSS_MB = 200.0
TARGET_INGEST_RATIO = 0.90
RETRY_SCHEDULE = [1.0] * 20
WARMUP_EVENTS = 500
BASELINE_CHUNKS = 5


@dataclass
class Chunk:
    rate: float  # accepted/s of this chunk
    not_accepted: int
    seconds: float


class PeakWatcher:
    """Samples the gateway's memory every 0.2 s: VmRSS summed over its processes (VmHWM is the
    kernel's exact peak of each), and every second their summed Pss and the largest one's RSS
    (`proportional_kib`: with a supervisor and its workers, summed RSS counts the
    shared interpreter once per process)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self.peak_process_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(0.2):
            self.peak_rss_kib = max(self.peak_rss_kib, memory_kib(self.pid)[0])
            ticks += 1
            if ticks % 5 == 0:
                pss, largest = proportional_kib(self.pid)
                self.peak_pss_kib = max(self.peak_pss_kib, pss)
                self.peak_process_kib = max(self.peak_process_kib, largest)


def mib(kib: float) -> float:
    return kib / 1024


def send_chunk(gateway: Service, start: int, count: int, args: argparse.Namespace) -> Chunk:
    requests = provider_requests(count, start=start)
    result = closed_loop(
        gateway.port,
        requests,
        connections=args.connections,
        duration=args.chunk_timeout,
        keep_bodies=True,
    )
    accepted = result.ok(b'"accepted"')
    return Chunk(
        rate=accepted / result.elapsed if result.elapsed else 0.0,
        not_accepted=count - accepted,
        seconds=result.elapsed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events during the outage")
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=0,
        help="the first events, into an empty store: the no-backlog rate (default: 2%%, >= 2000)",
    )
    parser.add_argument("--checkpoints", type=int, default=10, help="reports while it grows")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--down", choices=["refused", "503"], default="refused")
    parser.add_argument("--circuit", choices=["off", "on"], default="off")
    parser.add_argument("--chunk-timeout", type=float, default=900.0, help="seconds per chunk")
    parser.add_argument("--drain-timeout", type=float, default=1800.0)
    parser.add_argument("--quick", action="store_true", help="5,000 events, a smoke run")
    add_workers_option(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.quick:
        args.events, args.baseline_events = 5_000, args.baseline_events or 1_000
    baseline_events = args.baseline_events or max(2000, args.events // 50)
    baseline_events = min(baseline_events, args.events // 2)
    exit_on_sigterm()

    circuit_failures = 0 if args.circuit == "off" else 20
    circuit_seconds = None if args.circuit == "off" else 1.0
    code = code_version()
    print(machine_line("outage.py"))
    print(
        f"# {args.events} events while the subscriber is down ({args.down}), closed loop with"
        f" {args.connections} connections; first {baseline_events} into an empty store ="
        " the no-backlog rate"
    )
    print(
        f"# sink: http, max_in_flight 64, timeout_seconds 10, retry_schedule [1] * 20,"
        f" circuit_breaker_failures {circuit_failures}"
        + (f", circuit_breaker_seconds {circuit_seconds:g}" if circuit_seconds else "")
        + ("; `gateway enable sink` when it is back" if args.circuit == "on" else "")
    )
    print("# gateway: SQLite store (WAL, synchronous=FULL) in a fresh temp dir")
    print()

    secret = new_subscriber_secret()
    with scratch(args.keep, "outage") as root:
        port = free_port()
        subscriber = subscriber_service(
            root / "subscriber", secret, port=port, mode=503 if args.down == "503" else 200
        )
        gateway = gateway_service(
            root / "gateway",
            gateway_config(
                http_subscriber(
                    f"{subscriber.url}/events",
                    secret,
                    retry_schedule=RETRY_SCHEDULE,
                    circuit_breaker_failures=circuit_failures,
                    circuit_breaker_seconds=circuit_seconds,
                ),
            ),
            workers=args.workers,
        )
        try:
            if args.down == "503":
                subscriber.start()
            gateway.start()
            with PeakWatcher(gateway.pid) as watcher:
                run(args, gateway, subscriber, baseline_events, watcher)
        finally:
            gateway.stop()
            subscriber.stop()
    changed = code_changed_note(code)
    if changed:
        print(f"# note: {changed}")


def run(
    args: argparse.Namespace,
    gateway: Service,
    subscriber: Service,
    baseline_events: int,
    watcher: PeakWatcher,
) -> None:
    header = (
        f"{'events':>9}{'chunk s':>9}{'ingest/s':>10}{'vs base':>9}{'RSS MB':>8}{'peak MB':>9}"
        f"{'queue':>9}{'attempts':>10}{'dead':>7}{'not acc':>8}"
    )
    print(header)
    print("-" * len(header))
    started = time.monotonic()
    # A fresh process's first requests (connections, caches) are not the no-backlog rate.
    warmup = min(WARMUP_EVENTS, baseline_events // 2)
    send_chunk(gateway, 0, warmup, args)
    # The no-backlog rate: the median of several chunks into the (nearly) empty store, not one
    # short chunk whose luck would set every ratio below.
    size = (baseline_events - warmup) // BASELINE_CHUNKS
    starts = [warmup + i * size for i in range(BASELINE_CHUNKS)]
    firsts = [send_chunk(gateway, start, size, args) for start in starts]
    baseline = sorted(firsts, key=lambda chunk: chunk.rate)[BASELINE_CHUNKS // 2]
    sent = warmup + BASELINE_CHUNKS * size
    chunks: list[Chunk] = []

    def report(chunk: Chunk, label: str) -> None:
        rss, hwm = memory_kib(gateway.pid)
        metrics = Metrics.scrape(gateway.url)
        print(
            f"{label:>9}{chunk.seconds:>9.1f}{chunk.rate:>10.0f}"
            f"{chunk.rate / baseline.rate if baseline.rate else 0:>9.1%}{mib(rss):>8.0f}"
            f"{mib(hwm):>9.0f}{metrics.total('finrelay_delivery_queue_depth'):>9.0f}"
            f"{metrics.total('finrelay_delivery_attempts_total'):>10.0f}"
            f"{metrics.total('finrelay_dead_letters_total'):>7.0f}{chunk.not_accepted:>8}",
            flush=True,
        )

    report(baseline, f"{sent} base")
    for checkpoint in range(1, args.checkpoints + 1):
        until = args.events * checkpoint // args.checkpoints
        if until <= sent:
            continue
        chunk = send_chunk(gateway, sent, until - sent, args)
        sent = until
        chunks.append(chunk)
        report(chunk, str(sent))
    ingest_seconds = time.monotonic() - started

    # The subscriber is back.
    before = Metrics.scrape(gateway.url)
    accepted = int(before.accepted())
    delivered_before = before.total("finrelay_delivery_attempts_total", outcome="delivered")
    back = time.monotonic()
    if args.down == "503":
        http_post(subscriber.url + "/mode", b"200")
    else:
        subscriber.start()
    if args.circuit == "on":
        config = str(gateway.workdir / "gateway.toml")
        enable = subprocess.run(
            [sys.executable, "-m", "gateway", "enable", "sink", "--config", config],
            cwd=gateway.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        if enable.returncode != 0:
            print(f"# gateway enable failed: {enable.stdout}{enable.stderr}")
    print()
    print(f"subscriber back after {ingest_seconds:.0f} s of outage; draining")
    drain_header = f"{'seconds':>9}{'delivered':>11}{'queue':>9}{'deliv/s':>9}{'RSS MB':>8}"
    print(drain_header)
    print("-" * len(drain_header))
    queue = before.total("finrelay_delivery_queue_depth")
    backlog = max(queue, 1.0)
    next_report = 0.1
    last_count, last_time = 0.0, back
    delivered = 0.0
    # Each scrape counts the pending deliveries (tens of ms at 100,000s): poll less when large.
    interval = 2.0 if backlog > 50_000 else 1.0
    while True:
        time.sleep(interval)
        metrics = Metrics.scrape(gateway.url)
        now = time.monotonic()
        delivered = (
            metrics.total("finrelay_delivery_attempts_total", outcome="delivered")
            - delivered_before
        )
        queue = metrics.total("finrelay_delivery_queue_depth")
        done = queue == 0
        if delivered / backlog >= next_report or done or now - back > args.drain_timeout:
            rate = (delivered - last_count) / (now - last_time)
            print(
                f"{now - back:>9.0f}{delivered:>11.0f}{queue:>9.0f}{rate:>9.0f}"
                f"{mib(memory_kib(gateway.pid)[0]):>8.0f}",
                flush=True,
            )
            last_count, last_time = delivered, now
            while delivered / backlog >= next_report:
                next_report += 0.1
        if done or now - back > args.drain_timeout:
            break
    drain_seconds = time.monotonic() - back
    stats = get_json(subscriber.url + "/stats")
    final = Metrics.scrape(gateway.url)
    dead = final.total("finrelay_dead_letters_total")
    _, hwm = memory_kib(gateway.pid)
    peak = mib(max(hwm, watcher.peak_rss_kib))
    ratios = [chunk.rate / baseline.rate for chunk in chunks] if baseline.rate else []
    worst = min(ratios, default=float("nan"))
    middle = statistics.median(ratios) if ratios else float("nan")
    verdict = "met" if middle >= TARGET_INGEST_RATIO else "NOT met"
    print()
    print(
        f"events accepted {accepted} of {sent} sent; delivered and verified by the subscriber:"
        f" {stats['unique']} (failed verification {stats['failed']}, duplicates"
        f" {stats['duplicates']}); dead letters {dead:.0f}"
    )
    print(
        f"no-backlog ingest {baseline.rate:.0f}/s (median of {BASELINE_CHUNKS} chunks:"
        f" {', '.join(f'{chunk.rate:.0f}' for chunk in firsts)}); with the backlog growing:"
        f" median chunk {middle:.1%} of it (worst {worst:.1%}, last"
        f" {ratios[-1] if ratios else float('nan'):.1%})"
        f"  target >= {TARGET_INGEST_RATIO:.0%}: {verdict}"
    )
    pss = mib(watcher.peak_pss_kib)
    print(
        f"gateway memory, peak: Pss summed over its processes {pss:.0f} MB, the largest"
        f" process {mib(watcher.peak_process_kib):.0f} MB RSS, RSS summed {peak:.0f} MB (VmHWM;"
        f" counts shared pages once per process)  target < {TARGET_RSS_MB:.0f} MB (Pss):"
        f" {'met' if pss < TARGET_RSS_MB else 'NOT met'}"
    )
    state = "drained" if queue == 0 else f"NOT drained ({queue:.0f} left)"
    print(
        f"drain: {delivered:.0f} deliveries in {drain_seconds:.0f} s ="
        f" {delivered / drain_seconds:.0f} deliveries/s, {state}"
    )
    print(
        "# columns: events = sent so far; ingest/s = accepted per second of that chunk; vs base ="
        " / the no-backlog rate; queue = finrelay_delivery_queue_depth; attempts = delivery"
        " attempts so far; dead = dead letters; not acc = answers other than accepted"
    )


if __name__ == "__main__":
    main()

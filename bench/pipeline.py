"""The whole path, provider -> gateway -> subscriber, as a ratio to the subscriber alone.

Each run starts fresh processes on free loopback ports:

  - a Standard Webhooks subscriber (bench/_servers.py, its own uvicorn process with uvloop and
    httptools, so it does not share the gateway's GIL) that verifies every request with the
    `standardwebhooks` package and records when each event id first arrived;
  - `gateway serve`, SQLite store in a fresh temporary directory, every adapter as a source and
    one route to that subscriber over HTTP (v1 HMAC signatures, default max_in_flight 64).

Per repetition, interleaved:

  1. baseline: the generator posts what the gateway would send (canonical events, signed with
     Standard Webhooks v1) straight to a bare subscriber: the events/s it can verify.
  2. sustained: the generator posts distinct, signed provider webhooks (five adapters round
     robin) to the gateway as fast as it answers (closed loop, --connections) for --duration
     seconds; then the backlog drains (bounded by --drain-timeout). Figures: accepted/s while
     posting, delivered-and-verified/s in the same window, and end to end = events delivered /
     (last delivery - first post). Ratio: end to end / baseline.
  3. paced: an open loop at --rate events/s (default: half the end-to-end rate measured in step
     2 of the same repetition), for the latency at a load the pipeline sustains.

Stored -> delivered latency of every event = the subscriber's arrival time - the time the
generator got the gateway's 200 for it (same host, same clock); p50/p90/p99. The gateway's own
`finrelay_delivered_seconds` histogram (store -> acknowledged, coarse buckets) is shown too.

Store writes and commits per delivered event (issue 27: at most 3 writes), per run: the
gateway's /metrics read once at the end of the run (after its attempt records of every event the
subscriber got are counted; one scrape covers every `--workers` process, and the nodes are added
up), `finrelay_store_writes_total` and `finrelay_store_commits_total` since the gateway started,
divided by `finrelay_delivery_attempts_total{outcome="delivered"}`. A write is one request handed
to the store's group commit, whatever it carries; the summary splits them (bench/_common.py
`StoreWrites`): ingest (one per webhook request: its `accept`) and delivery, the rest: attempt
records (one write per attempt, or per batch of attempts where a transport sends in batches) and,
with SQLite, the dispatcher's claims (one per `claim_due` call, however many deliveries it
leases), heartbeats (two writes per process per second: the heartbeat and the release of silent
owners' leases), circuit saves and pauses. With PostgreSQL only the group commit's writes are
counted (accepts, attempt records): its claims, heartbeats and circuits are transactions of their
own, so its figures are a floor.

With `--store postgresql`, steps 2 and 3 run again with the gateway on PostgreSQL
(docs/reference/nodes.md), with 1, 2, ... N nodes (N = --nodes, default 3): N `gateway serve`
processes on one fresh database, each on its own port, the generator's connections spread over them
(connection i to node i mod N), all sending to the one subscriber. PostgreSQL is a temporary cluster
the script starts on this machine (tests/postgres_server.py, fsync on), sharing its CPUs with the
rest.

  Also per repetition: the same generator posting the provider webhooks to bare Starlette
  (bench/_servers.py `bare`, reads the body, answers 200): the stack's bound, as in ingest.py.

With `--tracing`, the SQLite pipeline runs in each of the gateway's ways of tracing
(bench/_tracing.py), interleaved in every repetition: `SQLite-off` (OTEL_SDK_DISABLED=true),
`SQLite` (propagating only, no OTEL_* variable: the default), `SQLite-otlp` (every span, the
webhook's and each attempt's, exported to a local OTLP/HTTP sink process answering 200); the
end-to-end rates are reported as ratios to `SQLite-off` of the same repetition.

With `--profile`, every gateway process is sampled by py-spy (bench/profile.py) in each
sustained run, from 2 s after /readyz until its backlog is delivered; the shares by thread and
by function are printed after its row, each also as CPU microseconds per delivered event (a
thread waiting for a core counts as busy: on a loaded machine trust the shares more).

Targets: >= 3,000 events/s sustained end to end, or as a ratio that travels between machines,
>= 13% of bare Starlette in the same run; delivered latency p50 < 20 ms. With --tracing
(issue 24): propagating >= 97% and exporting >= 85% of the untraced end-to-end rate. Store
writes per delivered event <= 3 (issue 27).

    .venv/bin/python bench/pipeline.py --quick   # a smoke run, seconds
    .venv/bin/python bench/pipeline.py           # 3 repetitions, about 2 minutes
    .venv/bin/python bench/pipeline.py --store postgresql --quick   # + PostgreSQL, 1-3 nodes
    .venv/bin/python bench/pipeline.py --tracing --quick   # + tracing off / exporting
    .venv/bin/python bench/pipeline.py --quick --profile   # + py-spy of the gateway, per event
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    SQLITE_URL,
    LoadResult,
    Nodes,
    Service,
    StoreWrites,
    add_store_options,
    add_workers_option,
    bare_service,
    canonical_requests,
    closed_loop,
    code_changed_note,
    code_version,
    cpu_seconds,
    exit_on_sigterm,
    fmt,
    gateway_config,
    get_json,
    histogram_quantile,
    http_subscriber,
    machine_line,
    median,
    new_subscriber_secret,
    open_loop,
    percent,
    percentile,
    postgres_version,
    process_tree,
    provider_requests,
    scratch,
    subscriber_service,
    temporary_postgres,
    wait_for_recorded,
)
from bench._tracing import exported_spans, running_sink, tracing_environment
from bench.profile import ensure_py_spy, read_stacks, start_recorders, stop_recorders, summarize

if TYPE_CHECKING:
    from tests.postgres_server import PostgresServer

TARGET_RATE = 3000.0
# Issue 16's form of the same target, a ratio that travels between machines: 13% of bare
# Starlette in the same run (3,000/s was 13% of bare on the machine of 2026-11-24).
TARGET_BARE_RATIO = 0.13
TARGET_P50_MS = 20.0
# Issue 27: store writes per delivered event, the accept and the attempt record included.
TARGET_WRITES = 3.0
# --profile: py-spy samples per second of each gateway process.
PROFILE_RATE = 200
PROFILE_SETTLE_SECONDS = 2.0
LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms")
# Issue 24: what tracing may cost, end to end, against OTEL_SDK_DISABLED=true.
TARGET_PROPAGATING = 0.97
TARGET_EXPORTING = 0.85


@dataclass(frozen=True)
class Setup:
    """Where the gateway keeps its store, and how many nodes share it."""

    key: str
    store: str  # sqlite, postgresql
    nodes: int = 1
    tracing: str = "propagating"  # off, propagating, exporting (bench/_tracing.py)


def setups(args: argparse.Namespace) -> list[Setup]:
    chosen = [Setup("SQLite", "sqlite")]
    if args.tracing:
        chosen = [
            Setup("SQLite-off", "sqlite", tracing="off"),
            chosen[0],
            Setup("SQLite-otlp", "sqlite", tracing="exporting"),
        ]
    if args.store == "postgresql":
        chosen += [Setup(f"PG x{n}", "postgresql", n) for n in range(1, args.nodes + 1)]
    return chosen


class _Answer(msgspec.Struct):
    status: str
    id: str


_answer = msgspec.json.Decoder(_Answer)


@dataclass
class Baseline:
    verified_per_second: float
    failed: int
    cpu: float  # subscriber CPU seconds per second


@dataclass
class Pipeline:
    mode: str  # "sustained" or "paced"
    offered: float  # paced: requests/s offered; sustained: nan
    accepted: int
    ingest_per_second: float  # accepted / posting window
    delivered: int  # distinct accepted events that arrived verified
    window_delivered_per_second: float  # those that arrived within the posting window, per s
    end_to_end: float  # delivered / (last arrival - first post)
    tail: float  # seconds from the last post's answer to the last delivery
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    gateway_p50_ms: float  # from finrelay_delivered_seconds buckets
    gateway_p99_ms: float
    failed: int  # requests the subscriber could not verify
    duplicates: int
    gateway_cpu: float  # every node's, summed
    gateway_cpu_per_event: float  # CPU seconds of every node over the run / events delivered
    subscriber_cpu: float
    db_cpu: float  # PostgreSQL's (every backend), nan with SQLite
    exhausted: bool  # the generator ran out of pre-signed requests before --duration
    store: StoreWrites  # the store's writes and commits over the whole run, and deliveries
    spans: float = float("nan")  # exporting: spans the sink received per accepted event
    # --profile: py-spy's collapsed stacks of every gateway process, by pid (sustained only)
    stacks: dict[int, list[tuple[str, int]]] | None = None


def run_baseline(workdir: Path, args: argparse.Namespace) -> Baseline:
    secret = new_subscriber_secret()
    requests = canonical_requests(int(args.baseline_requests_per_second * args.duration), secret)
    subscriber = subscriber_service(workdir, secret).start()
    try:
        cpu_before = cpu_seconds(subscriber.pid)
        result = closed_loop(
            subscriber.port, requests, connections=args.connections, duration=args.duration
        )
        cpu = cpu_seconds(subscriber.pid) - cpu_before
        stats = get_json(subscriber.url + "/stats")
    finally:
        subscriber.stop()
    assert isinstance(stats, dict)
    ok = sum(1 for status in result.statuses if 200 <= status < 300)
    return Baseline(
        verified_per_second=ok / result.elapsed if result.elapsed else 0.0,
        failed=int(stats["failed"]),
        cpu=cpu / result.elapsed if result.elapsed else float("nan"),
    )


def run_bare(workdir: Path, args: argparse.Namespace) -> float:
    """The same generator and provider webhooks against bare Starlette (bench/_servers.py: reads
    the body, answers 200): answered/s, the bound the gateway's stack puts on everything."""
    requests = provider_requests(int(args.requests_per_second * args.duration))
    bare = bare_service(workdir).start()
    try:
        result = closed_loop(
            bare.port, requests, connections=args.connections, duration=args.duration
        )
    finally:
        bare.stop()
    ok = sum(1 for status in result.statuses if 200 <= status < 300)
    return ok / result.elapsed if result.elapsed else 0.0


def wait_for_deliveries(subscriber: Service, expected: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        stats: dict[str, int] = get_json(subscriber.url + "/stats")
        if int(stats["unique"]) >= expected or time.monotonic() >= deadline:
            return stats
        time.sleep(0.2)


def database_cpu(postgres: PostgresServer | None) -> float:
    if postgres is None or postgres.process is None:
        return float("nan")
    return cpu_seconds(postgres.process.pid)


def run_pipeline(
    workdir: Path,
    args: argparse.Namespace,
    mode: str,
    rate: float = float("nan"),
    *,
    setup: Setup,
    postgres: PostgresServer | None,
    sink: Service | None = None,
) -> Pipeline:
    secret = new_subscriber_secret()
    subscriber = subscriber_service(workdir / "subscriber", secret)
    database = postgres if setup.store == "postgresql" else None
    store_url = SQLITE_URL if database is None else database.create_database()
    gateway = Nodes.create(
        workdir / "gateway",
        gateway_config(http_subscriber(f"{subscriber.url}/events", secret), store_url),
        setup.nodes,
        args.workers,
    )
    if mode == "sustained":
        requests = provider_requests(int(args.requests_per_second * args.duration))
    else:
        requests = provider_requests(int(rate * args.paced_seconds))
    try:
        subscriber.start()
        with tracing_environment(setup.tracing, sink):
            gateway.start()
        recorders, sampled = [], []
        if args.profile and mode == "sustained":
            # /readyz is one worker's answer: the others may still be importing, which is no
            # cost of an event.
            time.sleep(PROFILE_SETTLE_SECONDS)
            sampled = [pid for service in gateway.services for pid in process_tree(service.pid)]
            recorders = start_recorders(args.profile, sampled, workdir, PROFILE_RATE)
        cpu_before = gateway.cpu_seconds(), cpu_seconds(subscriber.pid), database_cpu(database)
        result: LoadResult
        if mode == "sustained":
            result = closed_loop(
                gateway.ports,
                requests,
                connections=args.connections,
                duration=args.duration,
                keep_bodies=True,
            )
        else:
            result = open_loop(
                gateway.ports,
                requests,
                rate=rate,
                connections=args.paced_connections,
                grace=args.drain_timeout,
                keep_bodies=True,
            )
        acked: dict[str, float] = {}
        for status, body, answered_at in zip(
            result.statuses, result.bodies, result.answered_at, strict=True
        ):
            if status == 200:
                answer = _answer.decode(body)
                if answer.status == "accepted":
                    acked[answer.id] = answered_at
        stats = wait_for_deliveries(subscriber, len(acked), args.drain_timeout)
        stop_recorders(recorders)
        gateway_cpu = gateway.cpu_seconds() - cpu_before[0]
        subscriber_cpu = cpu_seconds(subscriber.pid) - cpu_before[1]
        db_cpu = database_cpu(database) - cpu_before[2]
        records = get_json(subscriber.url + "/records")
        metrics = wait_for_recorded(gateway, int(stats["unique"]))
    finally:
        gateway.stop()
        subscriber.stop()
    # Read once the gateway has stopped: its last spans are flushed at its stop.
    spans = exported_spans(sink) if sink is not None else 0
    assert isinstance(records, dict)
    arrivals = {event_id: float(records[event_id]) for event_id in acked if event_id in records}
    posted_from = result.started
    posted_until = max(acked.values(), default=posted_from)
    window = max(posted_until - posted_from, 1e-9)
    last_arrival = max(arrivals.values(), default=posted_until)
    latencies = sorted(arrivals[event_id] - acked[event_id] for event_id in arrivals)
    buckets = metrics.buckets("finrelay_delivered_seconds")
    span = last_arrival - posted_from
    return Pipeline(
        mode=mode,
        offered=rate,
        accepted=len(acked),
        ingest_per_second=len(acked) / window,
        delivered=len(arrivals),
        window_delivered_per_second=sum(1 for t in arrivals.values() if t <= posted_until) / window,
        end_to_end=len(arrivals) / span if span > 0 else float("nan"),
        tail=last_arrival - posted_until,
        p50_ms=percentile(latencies, 50) * 1000,
        p90_ms=percentile(latencies, 90) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] if latencies else float("nan")) * 1000,
        gateway_p50_ms=histogram_quantile(buckets, 0.5) * 1000,
        gateway_p99_ms=histogram_quantile(buckets, 0.99) * 1000,
        failed=int(stats["failed"]),
        duplicates=int(stats["duplicates"]),
        gateway_cpu=gateway_cpu / span if span > 0 else float("nan"),
        gateway_cpu_per_event=gateway_cpu / len(arrivals) if arrivals else float("nan"),
        subscriber_cpu=subscriber_cpu / span if span > 0 else float("nan"),
        db_cpu=db_cpu / span if span > 0 else float("nan"),
        exhausted=mode == "sustained" and result.sent == len(requests),
        store=StoreWrites.of(metrics),
        spans=spans / len(acked) if setup.tracing == "exporting" and acked else float("nan"),
        stacks=read_stacks(sampled, workdir) if sampled else None,
    )


def row(label: str, p: Pipeline) -> str:
    return (
        f"{label:<26}{p.accepted:>8}{p.ingest_per_second:>9.0f}"
        f"{p.window_delivered_per_second:>9.0f}{p.end_to_end:>9.0f}{p.tail:>7.1f}{p.p50_ms:>8.1f}"
        f"{p.p90_ms:>8.1f}{p.p99_ms:>9.1f}{fmt(p.gateway_p50_ms, '.1f'):>8}"
        f"{fmt(p.gateway_p99_ms, '.0f'):>7}{p.gateway_cpu:>7.0%}{p.subscriber_cpu:>6.0%}"
        f"{percent(p.db_cpu):>7}{p.gateway_cpu_per_event * 1e6:>8.0f}"
        f"{p.store.per_delivered(p.store.writes):>7.2f}"
        f"{p.store.per_delivered(p.store.commits):>7.3f}"
    )


def print_store_writes(setup: Setup, runs: list[Pipeline]) -> None:
    """Store writes and commits per delivered event of the sustained runs (medians of each
    figure, so the parts need not add up to the total exactly)."""
    totals = [run.store for run in runs]

    def per(part: Callable[[StoreWrites], float]) -> float:
        return median([writes.per_delivered(part(writes)) for writes in totals])

    writes = per(lambda w: w.writes)
    floor = " (a floor: PostgreSQL's claims, heartbeats and circuits are not counted)"
    print(
        f"{setup.key}: store writes per delivered event, median:  {writes:.2f} (ingest"
        f" {per(lambda w: w.ingest):.2f} + delivery: attempt records, claims, heartbeats,"
        f" circuits {per(lambda w: w.delivery):.2f}){floor if setup.store == 'postgresql' else ''};"
        f" commits per delivered event {per(lambda w: w.commits):.3f}  target writes <="
        f" {TARGET_WRITES:g}: {'met' if writes <= TARGET_WRITES else 'NOT met'}"
    )


def print_tracing_costs(
    sustained: dict[str, list[Pipeline]], paced: dict[str, list[Pipeline]]
) -> None:
    """Propagating and exporting against tracing off, repetition by repetition (the runs next
    to each other), and the medians of those ratios."""
    for key, name, target in (
        ("SQLite", "propagating", TARGET_PROPAGATING),
        ("SQLite-otlp", "exporting", TARGET_EXPORTING),
    ):
        ratios = [
            x.end_to_end / y.end_to_end
            for x, y in zip(sustained[key], sustained["SQLite-off"], strict=True)
            if y.end_to_end
        ]
        ratio = median(ratios)
        spread = ", ".join(f"{r:.1%}" for r in ratios) if len(ratios) > 1 else ""
        latency = ""
        if paced[key] and paced["SQLite-off"]:
            latency = (
                f"; paced p50 {median([p.p50_ms for p in paced[key]]):.1f} ms (off:"
                f" {median([p.p50_ms for p in paced['SQLite-off']]):.1f} ms)"
            )
        print(
            f"tracing {name}: end to end {ratio:.1%} of tracing off"
            f"{f' (per repetition: {spread})' if spread else ''}{latency}"
            f"  target >= {target:.0%}: {'met' if ratio >= target else 'NOT met'}"
        )
    spans = median([s.spans for s in sustained["SQLite-otlp"]])
    print(f"exporting: {spans:.2f} spans received by the sink per accepted event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of posting")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="paced phase, events/s (default: half the sustained end-to-end rate; -1: skip)",
    )
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--paced-connections", type=int, default=16)
    parser.add_argument(
        "--drain-timeout", type=float, default=60.0, help="seconds to wait for deliveries"
    )
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=6000.0,
        help="pre-signed provider webhooks per second of --duration (the closed loop's cap)",
    )
    parser.add_argument(
        "--baseline-requests-per-second",
        type=float,
        default=10000.0,
        help="pre-signed canonical events per second of --duration, for the baseline",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    add_workers_option(parser)
    add_store_options(parser)
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="SQLite with tracing off, propagating (default) and exporting to a local OTLP sink",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample every gateway process with py-spy in the sustained runs (bench/profile.py)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    args = parser.parse_args()
    if args.profile:
        args.profile = ensure_py_spy()
        if args.profile is None:
            sys.exit(2)
    if args.quick:
        args.repetitions, args.duration, args.paced_seconds, args.drain_timeout = 1, 3.0, 2.0, 30.0
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    exit_on_sigterm()
    chosen = setups(args)

    code = code_version()
    print(machine_line("pipeline.py"))
    print(
        f"# provider -> gateway (SQLite in a fresh temp dir; PG rows: PostgreSQL) -> HTTP"
        " subscriber verifying every Standard Webhooks signature (separate uvicorn process);"
        f" {args.repetitions} repetitions"
    )
    print(
        f"# sustained: closed loop, {args.connections} connections, {args.duration:g} s of posting;"
        f" paced: open loop, {args.paced_connections} connections, {args.paced_seconds:g} s"
    )
    print("# baseline: the same generator posting signed canonical events to the bare subscriber")
    with (
        temporary_postgres(args.store == "postgresql") as postgres,
        running_sink(args.tracing) as sink,
    ):
        if postgres is not None:
            print(
                f"# PG xN: the same gateway on PostgreSQL, N nodes on one fresh database (each"
                f" serve --workers {args.workers}, own port), {postgres_version(postgres)} on this"
                " machine (fsync on)"
            )
        print()
        header = (
            f"{'run':<26}{'accepted':>8}{'ingest/s':>9}{'deliv/s':>9}{'e2e/s':>9}{'tail s':>7}"
            f"{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>9}{'gw p50':>8}{'gw p99':>7}{'gw cpu':>7}"
            f"{'sub':>6}{'db cpu':>7}{'us/ev':>8}{'wr/ev':>7}{'cm/ev':>7}"
        )
        print(header)
        print("-" * len(header))

        baselines: list[Baseline] = []
        bares: list[float] = []
        sustained: dict[str, list[Pipeline]] = {setup.key: [] for setup in chosen}
        paced: dict[str, list[Pipeline]] = {setup.key: [] for setup in chosen}
        notes: list[str] = []
        with scratch(args.keep, "pipeline") as root:
            for repetition in range(1, args.repetitions + 1):
                rep = root / f"rep{repetition}"
                baseline = run_baseline(rep / "baseline", args)
                baselines.append(baseline)
                print(
                    f"{f'{repetition} baseline':<26}{'':>8}{'':>9}"
                    f"{baseline.verified_per_second:>9.0f}{'':>9}{'':>7}{'':>8}{'':>8}{'':>9}"
                    f"{'':>8}{'':>7}{'':>7}{baseline.cpu:>6.0%}",
                    flush=True,
                )
                bare = run_bare(rep / "bare", args)
                bares.append(bare)
                print(f"{f'{repetition} bare Starlette':<26}{'':>8}{bare:>9.0f}", flush=True)
                if baseline.failed:
                    notes.append(
                        f"rep {repetition} baseline: {baseline.failed} failed verification"
                    )
                for setup in chosen:
                    where = rep / setup.key.replace(" ", "")
                    result = run_pipeline(
                        where / "sustained",
                        args,
                        "sustained",
                        setup=setup,
                        postgres=postgres,
                        sink=sink,
                    )
                    sustained[setup.key].append(result)
                    runs = [result]
                    print(row(f"{repetition} {setup.key} sustained", result), flush=True)
                    if result.stacks is not None:
                        print(f"\n# py-spy, every gateway process, {setup.key} sustained:")
                        summarize(result.stacks, 40, rate=PROFILE_RATE, events=result.delivered)
                        print()
                    rate = args.rate if args.rate > 0 else result.end_to_end / 2
                    if args.rate >= 0 and rate == rate and rate > 0:
                        result = run_pipeline(
                            where / "paced",
                            args,
                            "paced",
                            rate,
                            setup=setup,
                            postgres=postgres,
                            sink=sink,
                        )
                        paced[setup.key].append(result)
                        runs.append(result)
                        print(row(f"{repetition} {setup.key} @{rate:.0f}/s", result), flush=True)
                    for run in runs:
                        label = f"rep {repetition} {setup.key} {run.mode}"
                        if run.delivered < run.accepted:
                            notes.append(
                                f"{label}: {run.accepted - run.delivered} accepted events not"
                                f" delivered within --drain-timeout {args.drain_timeout:g} s"
                            )
                        if run.failed or run.duplicates:
                            notes.append(
                                f"{label}: {run.failed} failed verification,"
                                f" {run.duplicates} duplicates"
                            )
                        if run.exhausted:
                            notes.append(
                                f"{label}: the generator ran out of pre-signed requests before"
                                " --duration: raise --requests-per-second"
                            )

    print("-" * len(header))
    base = median([b.verified_per_second for b in baselines])
    print(f"baseline (subscriber alone) verified/s, median:  {base:.0f}")
    print(f"bare Starlette (the same generator) answered/s, median:  {median(bares):.0f}")
    sqlite_e2e = median([s.end_to_end for s in sustained["SQLite"]])
    for setup in chosen:
        runs = sustained[setup.key]
        e2e = median([s.end_to_end for s in runs])
        ingest = median([s.ingest_per_second for s in runs])
        ratios = [
            s.end_to_end / b.verified_per_second for s, b in zip(runs, baselines, strict=True)
        ]
        bare_ratios = [s.end_to_end / b for s, b in zip(runs, bares, strict=True)]
        of_bare = median(bare_ratios)
        each = ", ".join(f"{r:.1%}" for r in bare_ratios) if len(bare_ratios) > 1 else ""
        versus = "" if setup.store == "sqlite" else f", {e2e / sqlite_e2e:.0%} of SQLite's"
        print(
            f"{setup.key}: sustained end to end, median:  {e2e:.0f} events/s ({median(ratios):.1%}"
            f" of the baseline{versus}; ingest while posting {ingest:.0f}/s)  target >="
            f" {TARGET_RATE:.0f}/s: {'met' if e2e >= TARGET_RATE else 'NOT met'}; {of_bare:.1%}"
            f" of bare Starlette{f' (per repetition: {each})' if each else ''}, target >="
            f" {TARGET_BARE_RATIO:.0%}:"
            f" {'met' if of_bare >= TARGET_BARE_RATIO else 'NOT met'}"
        )
        print(
            f"{setup.key}: gateway CPU per delivered event, median:"
            f"  {median([s.gateway_cpu_per_event for s in runs]) * 1e6:.0f} us"
        )
        print_store_writes(setup, runs)
        p50, p90, p99 = (median([getattr(s, key) for s in runs]) for key in LATENCY_KEYS)
        print(
            f"{setup.key}: stored -> delivered at saturation, median p50/p90/p99:  {p50:.1f} /"
            f" {p90:.1f} / {p99:.1f} ms"
        )
        if paced[setup.key]:
            at = paced[setup.key]
            p50, p90, p99 = (median([getattr(p, key) for p in at]) for key in LATENCY_KEYS)
            print(
                f"{setup.key}: stored -> delivered at {median([p.offered for p in at]):.0f}"
                f" events/s, median p50/p90/p99:  {p50:.1f} / {p90:.1f} / {p99:.1f} ms  target"
                f" p50 < {TARGET_P50_MS:g} ms: {'met' if p50 < TARGET_P50_MS else 'NOT met'}"
            )
    if args.tracing:
        print_tracing_costs(sustained, paced)
    print(
        "# columns: accepted = events the gateway accepted; ingest/s = accepted per second of"
        " posting; deliv/s = delivered and verified within the posting window, per second;"
        " e2e/s = delivered / (last delivery - first post); tail = last delivery - last post;"
        " p50..p99 = subscriber arrival - the provider's 200; gw p50/p99 = the same from the"
        " gateway's finrelay_delivered_seconds buckets; gw cpu / sub / db cpu = CPU per second"
        " of the gateway (every node), the subscriber and PostgreSQL (100% = one core);"
        " baseline rows: deliv/s = verified/s, sub = its CPU; us/ev = the gateway's CPU"
        " microseconds (every node, user + system, posting and drain) per event delivered;"
        " wr/ev and cm/ev = the store's writes and commits over the run"
        " (finrelay_store_writes_total, _commits_total) per event delivered"
        " (finrelay_delivery_attempts_total{outcome=delivered})"
    )
    changed = code_changed_note(code)
    if changed:
        notes.append(changed)
    for note in notes:
        print(f"# note: {note}")


if __name__ == "__main__":
    main()

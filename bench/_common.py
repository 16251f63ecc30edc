"""What the service benchmarks share: processes, configs, signed requests, load generators.

Not a benchmark itself. `bench/ingest.py`, `bench/pipeline.py` and `bench/outage.py` import it;
`bench/_servers.py` holds the servers they start as separate processes.

- Processes: every server is a child process in its own fresh temporary directory, on a free
  loopback port, waited for by polling `/readyz`, stopped with SIGTERM then SIGKILL.
- Requests: pre-generated, each a distinct provider event (`adapters.samples.sample_body`),
  signed as the provider would sign it at generation time (timestamps are checked within 300 s,
  so each script generates them per repetition or per chunk), as raw HTTP/1.1 bytes that both
  wrk and the Python load generators send unchanged.
- Load generators (asyncio streams on keep-alive connections, no HTTP library): a closed loop
  (each connection sends its next request when the last one is answered) and an open loop
  (requests go out on a fixed schedule whatever the answers; latency counts from the scheduled
  time, so a slow answer cannot hide the requests queued behind it: no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import gc
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.registry import ADAPTERS
from adapters.samples import sample_body
from adapters.source import Secret, SourceSettings
from gateway.signing import SigningKeys
from schemas.event import encode_event

if TYPE_CHECKING:
    from tests.postgres_server import PostgresServer

REPO = Path(__file__).resolve().parents[1]

# Test-only values, as in bench/adapters.py. FinFusion's secret has Stripe's `whsec_` form.
PROVIDER_SECRET = "whsec_bench_Zm9vYmFyYmF6cXV4cXV1eA"
TOKEN = "bench-token-1b7e"
# Source name = adapter name; one of each, in this order, round robin.
SOURCES = ("finaegis", "finexer", "finfusion", "finchpay", "account_lifecycle")
LIFECYCLE_CURRENCY = "GBP"
HOST = "127.0.0.1"


# Processes.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def code_version() -> str:
    """The commit, and whether the code under test has uncommitted changes (each server
    process runs the code as it was when it started)."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(REPO), *argv],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return "?"
        return done.stdout.strip() if done.returncode == 0 else "?"

    head = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--porcelain", "--", "gateway", "adapters", "schemas")
    return f"{head}{' + uncommitted changes in gateway/adapters/schemas' if changed else ''}"


def machine_line(script: str) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"# bench/{script}  {datetime.now(UTC):%Y-%m-%d %H:%M}Z  Python {platform.python_version()}"
        f"  {cpu_count()} CPUs  load average {load:.2f} at start  code {code_version()}"
    )


def code_changed_note(at_start: str) -> str | None:
    """A warning when the code under test changed while the benchmark ran."""
    now = code_version()
    if now == at_start:
        return None
    return f"the code changed during the run ({at_start} -> {now}): figures may mix versions"


class Service:
    """A child process with its log in its working directory; `stop` is safe to call twice."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, port: int) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.port = port
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, ready_path: str = "/readyz", timeout: float = 30.0) -> Service:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if http_get(self.url + ready_path, timeout=1.0)[0] == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready in {timeout} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds: this process only, by its pid."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """`--workers N|auto`: the gateway runs as `gateway serve --workers N` (every service
    script); "auto" (the default, as the gateway's) is one per CPU."""
    parser.add_argument(
        "--workers",
        default="auto",
        help='gateway worker processes (serve --workers N; default "auto", as the gateway\'s)',
    )


def gateway_service(
    workdir: Path, config: str, name: str = "gateway", workers: int | str = "auto"
) -> Service:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "gateway.toml"
    config_path.write_text(config)
    port = free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path)]
    argv += ["--port", str(port), "--workers", str(workers)]
    return Service(name, argv, workdir, port)


class Nodes:
    """One gateway as several `gateway serve` processes ("nodes", each with its own `--workers`)
    on one store, each on its own port; SQLite runs are one node. What the scripts read of a
    gateway (CPU, /metrics counters) is summed over the nodes."""

    def __init__(self, services: Sequence[Service]) -> None:
        self.services = list(services)

    @classmethod
    def create(
        cls, workdir: Path, config: str, nodes: int = 1, workers: int | str = "auto"
    ) -> Nodes:
        if nodes == 1:
            services = [gateway_service(workdir, config, workers=workers)]
        else:
            services = [
                gateway_service(workdir / f"node{n}", config, f"gateway{n}", workers)
                for n in range(nodes)
            ]
        for service in services:
            # A file subscriber's ./data: the SQLite store would create it, PostgreSQL does not.
            (service.workdir / "data").mkdir(exist_ok=True)
        return cls(services)

    def start(self) -> Nodes:
        # One after the other: the first creates the schema (nodes starting together are safe
        # too, but wait for each other meanwhile, which would only blur the start-up).
        for service in self.services:
            service.start()
        return self

    def stop(self) -> None:
        for service in self.services:
            service.stop()

    @property
    def ports(self) -> list[int]:
        return [service.port for service in self.services]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(service.pid) for service in self.services)

    def scrape(self) -> Metrics:
        """Every node's /metrics in one: counters add up (store-wide gauges would not)."""
        return Metrics(
            [s for service in self.services for s in Metrics.scrape(service.url).samples]
        )


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """`--store postgresql` and `--nodes N`: besides the SQLite gateway, the same gateway on a
    temporary PostgreSQL with 1, 2, ... N nodes on this machine (docs/reference/nodes.md)."""
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="postgresql: also run the gateway on a temporary PostgreSQL (default: SQLite only)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=3,
        help="with --store postgresql: runs with 1, 2, ... N gateway nodes (default 3)",
    )


@contextlib.contextmanager
def temporary_postgres(enabled: bool) -> Iterator[PostgresServer | None]:
    """The tests' temporary PostgreSQL (tests/postgres_server.py: a fresh initdb cluster on a
    free loopback port, run as the `postgres` user when root, fsync on as in production; each
    gateway run takes a fresh database in it), or None when not `enabled`. Removed afterwards."""
    if not enabled:
        yield None
        return
    from tests.postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.shutdown()


def postgres_version(server: PostgresServer) -> str:
    done = subprocess.run(
        [str(server.bin / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "PostgreSQL ?"


def bare_service(workdir: Path) -> Service:
    port = free_port()
    argv = [sys.executable, str(REPO / "bench" / "_servers.py"), "bare", "--port", str(port)]
    return Service("bare", argv, workdir, port)


def subscriber_service(
    workdir: Path, secret: str, port: int | None = None, mode: int = 200, name: str = "subscriber"
) -> Service:
    port = port or free_port()
    argv = [sys.executable, str(REPO / "bench" / "_servers.py"), "subscriber"]
    argv += ["--port", str(port), "--secret", secret, "--mode", str(mode)]
    return Service(name, argv, workdir, port)


@contextlib.contextmanager
def scratch(keep: bool, prefix: str) -> Iterator[Path]:
    """A fresh temporary directory, removed afterwards unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix=f"finrelay-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"# kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def process_tree(pid: int) -> list[int]:
    """`pid` and every live process under it (`gateway serve --workers N` has N workers)."""
    found = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found += process_tree(int(child))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB of a process and its descendants, summed, from /proc/*/status.
    With workers, the summed VmHWM is an upper bound of the peak (each peaks at its own time)."""
    rss = hwm = 0
    for member in process_tree(pid):
        values = {"VmRSS": 0, "VmHWM": 0}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = int(rest.split()[0])
        rss += values["VmRSS"]
        hwm += values["VmHWM"]
    return rss, hwm


def proportional_kib(pid: int) -> tuple[int, int]:
    """(summed Pss, largest VmRSS) in KiB over a process and its descendants. With several
    processes, summed RSS counts the pages they share (the interpreter, the libraries) once per
    process; Pss divides each shared page among its sharers, so the sum is what the tree
    occupies (/proc/<pid>/smaps_rollup)."""
    pss = largest = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        largest = max(largest, memory_kib_one(member))
    return pss, largest


def memory_kib_one(pid: int) -> int:
    """VmRSS in KiB of one process (0 when it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of a process and its live descendants, /proc/*/stat."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            if member == pid:
                return float("nan")
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


# HTTP for control (metrics, readiness, subscriber stats): the standard library is enough.


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_post(url: str, body: bytes, timeout: float = 10.0) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status: int = response.status
        return status


def get_json(url: str, timeout: float = 30.0) -> Any:
    status, body = http_get(url, timeout)
    if status != 200:
        raise RuntimeError(f"GET {url}: HTTP {status}")
    return json.loads(body)


# Prometheus text.

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Metrics:
    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def scrape(cls, base_url: str) -> Metrics:
        status, body = http_get(base_url + "/metrics", timeout=60)
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        samples = []
        for line in body.decode().splitlines():
            match = _SAMPLE.match(line)
            if match is None or line.startswith("#"):
                continue
            labels = dict(_LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
        return cls(samples)

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of `name` whose labels include `labels`."""
        return sum(
            value
            for sample, have, value in self.samples
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = collections.defaultdict(float)
        for sample, have, value in self.samples:
            if sample == name:
                out[have.get(label, "")] += value
        return dict(out)

    def accepted(self) -> float:
        return self.total("finrelay_webhooks_answered_total", outcome="accepted")

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of a histogram, summed over the matching series."""
        counts: dict[float, float] = collections.defaultdict(float)
        for sample, have, value in self.samples:
            if sample == name + "_bucket" and all(have.get(k) == v for k, v in labels.items()):
                counts[float(have["le"])] += value
        return sorted(counts.items())


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus's estimate: linear within the bucket holding the q-quantile."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = upper, count
    return buckets[-1][0]


# Store writes per delivered event (issue 27's aim: at most 3).

# Answers whose request handed the store one write: `accept` (one event) or `accept_many` (a
# batch provider's request, all its events), or the quarantine of its payload.
_INGEST_WRITE_OUTCOMES = ("accepted", "duplicate", "invalid_payload")


@dataclass(frozen=True)
class StoreWrites:
    """What a gateway's store committed, from its /metrics, against the events it delivered.

    `writes` and `commits` are `finrelay_store_writes_total` and `finrelay_store_commits_total`:
    what the store's group commit reports (gateway/metrics.py `record_commit`). A write there is
    one request handed to the store's writer, whatever it carries, and it is split here in two:

      - ingest: one per webhook request that reached the store (`accept`, all of a batch
        provider's events in one `accept_many`, or a quarantine), counted from
        `finrelay_webhooks_answered_total` (accepted, duplicate, invalid_payload);
      - delivery: the rest, the dispatcher's. Attempt records (one write per attempt, or one
        per batch of them where a transport sends in batches); with SQLite, whose writer
        thread takes every write, also its claims (one per `claim_due` call, however many
        deliveries it leases), heartbeats (each process, every second: the heartbeat and the
        release of silent owners' leases, two writes), circuit saves and pauses. PostgreSQL's
        claims, heartbeats and circuits are transactions of their own that no counter sees:
        there only the group commit's writes (accepts, attempt records) count, a floor.

    Delivered = `finrelay_delivery_attempts_total{outcome="delivered"}`. Read once, at the end of
    the run, from a gateway started for it: everything it wrote since it started, idle
    heartbeats included. With `serve --workers N` one scrape is every worker's (multiprocess
    mode adds up their counters); with several nodes `Nodes.scrape` adds up the nodes.
    """

    delivered: float
    commits: float
    writes: float
    ingest: float

    @classmethod
    def of(cls, metrics: Metrics) -> StoreWrites:
        answered = metrics.by_label("finrelay_webhooks_answered_total", "outcome")
        return cls(
            delivered=metrics.total("finrelay_delivery_attempts_total", outcome="delivered"),
            commits=metrics.total("finrelay_store_commits_total"),
            writes=metrics.total("finrelay_store_writes_total"),
            ingest=sum(answered.get(outcome, 0.0) for outcome in _INGEST_WRITE_OUTCOMES),
        )

    @property
    def delivery(self) -> float:
        return max(0.0, self.writes - self.ingest)

    def per_delivered(self, count: float) -> float:
        return count / self.delivered if self.delivered else float("nan")

    def summary(self) -> str:
        """Writes per delivered event (ingest + delivery), and commits per delivered event."""
        per = self.per_delivered
        return (
            f"{per(self.writes):.2f} writes/delivered (ingest {per(self.ingest):.2f} + delivery"
            f" {per(self.delivery):.2f}), {per(self.commits):.3f} commits/delivered"
        )


def wait_for_recorded(nodes: Nodes, delivered: int, timeout: float = 10.0) -> Metrics:
    """The gateway's /metrics once it has recorded `delivered` deliveries (or at `timeout`): a
    subscriber has the last events a moment before their attempt records are committed."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = nodes.scrape()
        done = metrics.total("finrelay_delivery_attempts_total", outcome="delivered")
        if done >= delivered or time.monotonic() >= deadline:
            return metrics
        time.sleep(0.1)


# Configuration.


SQLITE_URL = "sqlite:///./data/gateway.db"


def gateway_config(subscriber_toml: str, store_url: str = SQLITE_URL) -> str:
    """Every adapter once (source name = adapter name), one subscriber "sink", one route; the
    store is SQLite in the working directory unless `store_url` names another."""
    return f"""
[server]
host = "{HOST}"
port = 0

[store]
url = "{store_url}"

[sources.finaegis]
adapter = "finaegis"
secret = "{PROVIDER_SECRET}"

[sources.finexer]
adapter = "finexer"
secret = "{PROVIDER_SECRET}"

[sources.finfusion]
adapter = "finfusion"
secret = "{PROVIDER_SECRET}"

[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"

[sources.account_lifecycle]
adapter = "account_lifecycle"
token = "{TOKEN}"
currency = "{LIFECYCLE_CURRENCY}"

{subscriber_toml.strip()}

[[routes]]
subscribers = ["sink"]
"""


FILE_SUBSCRIBER = """
[subscribers.sink]
kind = "file"
path = "./data/events.jsonl"
"""


def http_subscriber(
    url: str,
    secret: str,
    *,
    retry_schedule: Sequence[float] | None = None,
    max_in_flight: int | None = None,
    circuit_breaker_failures: int | None = None,
    circuit_breaker_seconds: float | None = None,
    timeout_seconds: float | None = None,
) -> str:
    lines = ["[subscribers.sink]", 'kind = "http"', f'url = "{url}"', f'secret = "{secret}"']
    if retry_schedule is not None:
        lines.append(f"retry_schedule = [{', '.join(f'{s:g}' for s in retry_schedule)}]")
    for key, value in (
        ("max_in_flight", max_in_flight),
        ("circuit_breaker_failures", circuit_breaker_failures),
        ("circuit_breaker_seconds", circuit_breaker_seconds),
        ("timeout_seconds", timeout_seconds),
    ):
        if value is not None:
            lines.append(f"{key} = {value:g}")
    return "\n".join(lines)


def new_subscriber_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


# Requests.


def raw_request(target: str, headers: dict[str, str], body: bytes, content_type: str) -> bytes:
    head = [
        f"POST {target} HTTP/1.1",
        f"Host: {HOST}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
    ]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def provider_webhook(index: int, now: datetime) -> tuple[str, bytes, dict[str, str], str]:
    """(source, body, headers, target) of a new event, signed (or tokened) at `now`."""
    source = SOURCES[index % len(SOURCES)]
    adapter = ADAPTERS[source]
    body = sample_body(source, None, now)
    if adapter.sign is not None:
        return source, body, adapter.sign(body, PROVIDER_SECRET, now), f"/webhooks/{source}"
    return source, body, {}, f"/webhooks/{source}?token={TOKEN}"


def provider_requests(count: int, start: int = 0) -> list[bytes]:
    """`count` distinct provider webhooks round robin over the five adapters, signed now."""
    now = datetime.now(UTC)
    requests = []
    for index in range(start, start + count):
        _, body, headers, target = provider_webhook(index, now)
        requests.append(raw_request(target, headers, body, "application/json"))
    return requests


def canonical_requests(count: int, subscriber_secret: str) -> list[bytes]:
    """What the gateway would send a subscriber for `count` new provider events: the canonical
    body, signed with Standard Webhooks v1 now. For the subscriber's own baseline."""
    now = datetime.now(UTC)
    keys = SigningKeys((Secret(subscriber_secret),))
    settings = {
        name: SourceSettings(name=name, adapter=name, currency=LIFECYCLE_CURRENCY)
        for name in SOURCES
    }
    timestamp = int(now.timestamp())
    requests = []
    for index in range(count):
        source, body, headers, _ = provider_webhook(index, now)
        adapter = ADAPTERS[source]
        event = adapter.normalize(body, headers, settings[source], now, "signature")
        encoded = encode_event(event)
        signature = keys.sign(event.id, timestamp, encoded)
        assert signature is not None
        sent_headers = {
            "user-agent": "finrelay/bench",
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        requests.append(
            raw_request("/events", sent_headers, encoded, "application/cloudevents+json")
        )
    return requests


# Statistics.


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; nan when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(values: Sequence[float]) -> float:
    clean = sorted(v for v in values if not math.isnan(v))
    if not clean:
        return float("nan")
    middle = len(clean) // 2
    return clean[middle] if len(clean) % 2 else (clean[middle - 1] + clean[middle]) / 2


def fmt(value: float, spec: str = ".0f") -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def percent(value: float) -> str:
    """A share of one core (or of anything) as a whole percentage; n/a when not measured."""
    return fmt(value, ".0%")


# Load generators.


class ProtocolError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lowered = head.lower()
    at = lowered.find(b"\r\ncontent-length:")
    if at < 0:
        if status in (204, 304) or status < 200:
            return status, b""
        raise ProtocolError("a response without content-length")
    end = lowered.index(b"\r\n", at + 2)
    length = int(lowered[at + 17 : end])
    body = await reader.readexactly(length) if length else b""
    return status, body


@dataclass
class LoadResult:
    """Per request (by index): status (0 = no answer), answer time (time.time()), latency (s)."""

    count: int
    keep_bodies: bool = False
    sent: int = 0
    statuses: list[int] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    send_lag: list[float] = field(default_factory=list)  # open loop: actual - scheduled send
    errors: int = 0  # connection errors (requests lost with their connection)
    started: float = 0.0  # time.time() of the first send
    elapsed: float = 0.0  # first send to last answer (closed) or to the last answer (open)

    def __post_init__(self) -> None:
        self.statuses = [0] * self.count
        self.answered_at = [0.0] * self.count
        self.latency = [math.nan] * self.count
        if self.keep_bodies:
            self.bodies = [b""] * self.count

    def answered(self) -> int:
        return sum(1 for status in self.statuses if status)

    def status_counts(self) -> collections.Counter[int]:
        return collections.Counter(status for status in self.statuses[: self.sent])

    def ok(self, marker: bytes | None = None) -> int:
        """200 answers (whose body contains `marker`, when given and bodies were kept)."""
        if marker is None or not self.keep_bodies:
            return sum(1 for status in self.statuses if status == 200)
        return sum(
            1
            for status, body in zip(self.statuses, self.bodies, strict=True)
            if status == 200 and marker in body
        )

    def latencies(self) -> list[float]:
        return sorted(value for value in self.latency if not math.isnan(value))


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No collector pauses inside the generator while it measures."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _run(coroutine: object) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a gateway dependency
        asyncio.run(coroutine)  # type: ignore[arg-type]
    else:
        uvloop.run(coroutine)  # type: ignore[arg-type]


def _ports(port: int | Sequence[int]) -> list[int]:
    return [port] if isinstance(port, int) else list(port)


def closed_loop(
    port: int | Sequence[int],
    requests: Sequence[bytes],
    *,
    connections: int,
    duration: float,
    keep_bodies: bool = False,
) -> LoadResult:
    """Each connection sends its next request once the last is answered, until `duration`
    seconds have passed or the requests run out (each is sent at most once). With several
    ports (gateway nodes), connection i goes to port i mod len(ports)."""
    result = LoadResult(len(requests), keep_bodies)
    ports = _ports(port)

    async def main() -> None:
        next_index = 0
        streams = [
            await asyncio.open_connection(HOST, ports[n % len(ports)]) for n in range(connections)
        ]
        begin = time.perf_counter()
        wall_begin = time.time()
        deadline = begin + duration
        last = begin

        async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal next_index, last
            try:
                while next_index < len(requests):
                    now = time.perf_counter()
                    if now >= deadline:
                        return
                    index = next_index
                    next_index += 1
                    writer.write(requests[index])
                    status, body = await read_response(reader)
                    done = time.perf_counter()
                    result.statuses[index] = status
                    result.latency[index] = done - now
                    result.answered_at[index] = wall_begin + (done - begin)
                    if keep_bodies:
                        result.bodies[index] = body
                    last = done
            except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError):
                result.errors += 1
            finally:
                writer.close()

        workers = [asyncio.create_task(worker(r, w)) for r, w in streams]
        _, pending = await asyncio.wait(workers, timeout=duration + 60)
        for task in pending:
            task.cancel()
        result.sent = next_index
        result.started = wall_begin
        result.elapsed = last - begin

    with _no_gc():
        _run(main())
    return result


def open_loop(
    port: int | Sequence[int],
    requests: Sequence[bytes],
    *,
    rate: float,
    connections: int,
    grace: float = 10.0,
    keep_bodies: bool = False,
) -> LoadResult:
    """Request i goes out at start + i / rate on connection i % connections, whether or not
    earlier requests were answered (HTTP/1.1 pipelining when one is still open on it). Latency is
    answer time minus *scheduled* time. Answers not in by `grace` seconds after the last
    scheduled send are counted as unanswered (status 0). With several ports (gateway nodes),
    connection i goes to port i mod len(ports), so requests spread evenly over them."""
    result = LoadResult(len(requests), keep_bodies)
    ports = _ports(port)

    async def main() -> None:
        streams = [
            await asyncio.open_connection(HOST, ports[n % len(ports)]) for n in range(connections)
        ]
        fifos: list[collections.deque[int]] = [collections.deque() for _ in streams]
        outstanding = 0
        sending_done = False
        all_answered = asyncio.Event()
        begin = time.perf_counter() + 0.05
        wall_begin = time.time() + 0.05
        last = begin

        async def reader_task(number: int, reader: asyncio.StreamReader) -> None:
            nonlocal outstanding, last
            fifo = fifos[number]
            try:
                while True:
                    status, body = await read_response(reader)
                    done = time.perf_counter()
                    index = fifo.popleft()
                    result.statuses[index] = status
                    result.latency[index] = done - (begin + index / rate)
                    result.answered_at[index] = wall_begin + (done - begin)
                    if keep_bodies:
                        result.bodies[index] = body
                    last = done
                    outstanding -= 1
                    if sending_done and outstanding == 0:
                        all_answered.set()
            except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError, IndexError):
                result.errors += 1
                outstanding -= len(fifo)
                fifo.clear()
                if sending_done and outstanding <= 0:
                    all_answered.set()

        readers = [
            asyncio.create_task(reader_task(number, reader))
            for number, (reader, _) in enumerate(streams)
        ]
        index = 0
        while index < len(requests):
            now = time.perf_counter()
            while index < len(requests) and begin + index / rate <= now:
                number = index % len(streams)
                writer = streams[number][1]
                if writer.is_closing():
                    result.errors += 1
                else:
                    fifos[number].append(index)
                    outstanding += 1
                    writer.write(requests[index])
                result.send_lag.append(now - (begin + index / rate))
                index += 1
            if index < len(requests):
                # Timers tick in milliseconds: a shorter sleep spins. Sends go out in per-ms
                # batches, so a request can leave up to ~1 ms late (`send_lag`; it counts in
                # its latency, which runs from the scheduled time).
                await asyncio.sleep(max(0.001, begin + index / rate - time.perf_counter()))
        result.sent = index
        sending_done = True
        if outstanding > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_answered.wait(), grace)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for _, writer in streams:
            writer.close()
        result.started = wall_begin
        result.elapsed = last - begin

    with _no_gc():
        _run(main())
    return result


# wrk.

WRK_SCRIPT = r"""
-- Written by bench/_common.py. Thread n reads its own slice of the pre-signed requests from
-- PREFIX.n (records "<length>\n<raw HTTP request>"), so no two threads ever send the same one.
local prefix = "%(prefix)s"
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local file = assert(io.open(prefix .. "." .. id, "rb"))
  requests = {}
  while true do
    local line = file:read("*l")
    if not line then break end
    requests[#requests + 1] = file:read(tonumber(line))
  end
  file:close()
  index = 0
  wraps = 0
end

function request()
  index = index + 1
  if index > #requests then
    index = 1
    wraps = wraps + 1
  end
  return requests[index]
end

function done(summary, latency, requests)
  local wrapped = 0
  for _, thread in ipairs(threads) do
    wrapped = wrapped + (thread:get("wraps") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"duration_us": %%d, "requests": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p90_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d, "wraps": %%d}\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    wrapped))
end
"""


def ensure_wrk() -> str:
    """The wrk binary, installed with apt-get (Debian package `wrk`) when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("# wrk not found: apt-get install -y wrk", flush=True)
    install = ["apt-get", "install", "-y", "wrk"]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, check=False, env=environment).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True, env=environment)
        subprocess.run(install, check=True, env=environment)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still missing after apt-get install")
    return found


def write_wrk_inputs(directory: Path, requests: Sequence[bytes], threads: int) -> Path:
    """Per-thread request files and the Lua script that reads them; returns the script."""
    prefix = directory / "requests"
    for thread in range(threads):
        with open(f"{prefix}.{thread}", "wb") as out:
            for raw in requests[thread::threads]:
                out.write(b"%d\n" % len(raw))
                out.write(raw)
    script = directory / "bench.lua"
    script.write_text(WRK_SCRIPT % {"prefix": str(prefix)})
    return script


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    *,
    threads: int,
    connections: int,
    duration: float,
    timeout: float = 5.0,
) -> dict[str, float]:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    argv += [f"--timeout={timeout:g}s", "-s", str(script), url]
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 120, check=False
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            figures: dict[str, float] = json.loads(line.removeprefix("BENCHJSON "))
            return figures
    raise RuntimeError(f"wrk gave no result:\n{completed.stdout}\n{completed.stderr}")


def write_spread_wrk_inputs(
    directory: Path, requests: Sequence[bytes], nodes: int, threads: int
) -> list[Path]:
    """One wrk script per node, each over its own slice of `requests` (request i to node
    i mod nodes), with `threads` threads each: no request is sent to two nodes."""
    scripts = []
    for node in range(nodes):
        node_directory = directory / f"node{node}"
        node_directory.mkdir(parents=True, exist_ok=True)
        scripts.append(write_wrk_inputs(node_directory, requests[node::nodes], threads))
    return scripts


def spread_threads(threads: int, connections: int, nodes: int) -> tuple[int, int]:
    """wrk threads and connections per node when one wrk runs per node: about the same totals
    as one wrk (each wrk needs a thread: 2 threads over 3 nodes are 3)."""
    return max(1, threads // nodes), max(1, connections // nodes)


def run_wrk_spread(
    wrk: str,
    urls: Sequence[str],
    scripts: Sequence[Path],
    *,
    threads: int,
    connections: int,
    duration: float,
) -> dict[str, float]:
    """wrk against several gateway nodes at once: one wrk per node (`threads` and `connections`
    each), run together, figures merged: counts add up, the duration is the longest, p50 is
    the mean of the nodes' weighted by requests, p90/p99/max the worst node's (percentiles do
    not merge exactly: an upper bound)."""
    if len(urls) == 1:
        return run_wrk(
            wrk, urls[0], scripts[0], threads=threads, connections=connections, duration=duration
        )
    with ThreadPoolExecutor(len(urls)) as pool:
        results = list(
            pool.map(
                lambda pair: run_wrk(
                    wrk,
                    pair[0],
                    pair[1],
                    threads=threads,
                    connections=connections,
                    duration=duration,
                ),
                zip(urls, scripts, strict=True),
            )
        )
    merged = {
        key: sum(result[key] for result in results)
        for key in ("requests", "connect", "read", "write", "status", "timeout", "wraps")
    }
    merged["duration_us"] = max(result["duration_us"] for result in results)
    total = merged["requests"] or 1
    merged["p50_us"] = sum(result["p50_us"] * result["requests"] for result in results) / total
    for key in ("p90_us", "p99_us", "max_us"):
        merged[key] = max(result[key] for result in results)
    return merged

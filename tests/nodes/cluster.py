"""Several `gateway serve` processes on one PostgreSQL database (docs/reference/nodes.md), for
black-box tests: each node is a real subprocess (tests/service/harness.py's GatewayProcess) in its
own working directory, on its own free port, with the same config file: one `[store] url` naming the
test's database, FinchPay as the source (a token: the cheapest event to make) and one HTTP
subscriber, `ledger`, the verifying one of tests/delivery/subscriber.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from adapters.samples import sample_body
from tests.delivery.test_delivery import subscriber_toml
from tests.service.harness import GatewayProcess
from tests.support import TOKEN

# How long anything that should happen soon may take on a loaded 2-core machine.
SOON = 30.0


def node_config(store_url: str, subscriber: str, *, role: str | None = None) -> str:
    """One node's config: the shared store, FinchPay, `subscriber` (a [subscribers.ledger]
    block) routed everything."""
    role_line = "" if role is None else f'role = "{role}"\n'
    return f"""
[server]
host = "127.0.0.1"
port = 0
{role_line}
[store]
url = "{store_url}"

[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"

{subscriber.strip()}

[[routes]]
subscribers = ["ledger"]
"""


def ledger(url: str, secret: str, **settings: object) -> str:
    return subscriber_toml("ledger", url, [secret], **settings)


def new_body() -> bytes:
    """A new FinchPay event (a fresh provider id each call)."""
    return sample_body("finchpay", "COMPLETE", datetime.now(UTC))


class Cluster:
    """Nodes sharing one store; `start()` starts them all at once (they race to create the
    schema, as nodes deployed together do), `stop()` stops them (SIGTERM), and every log is
    kept for the report of a failed test."""

    def __init__(self, root: Path, configs: Sequence[str], serve_args: Sequence[str] = ()) -> None:
        self.nodes: list[GatewayProcess] = []
        for number, config in enumerate(configs):
            workdir = root / f"node{number}"
            workdir.mkdir(parents=True)
            self.nodes.append(GatewayProcess(workdir, config, serve_args=serve_args))

    def start(self) -> Cluster:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.start(timeout=SOON), self.nodes))
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- node{number} log ---\n{node.logs()[-5000:]}"
            for number, node in enumerate(self.nodes)
        )

    def __getitem__(self, number: int) -> GatewayProcess:
        return self.nodes[number]

    def __len__(self) -> int:
        return len(self.nodes)


def post(client: httpx.Client, node: GatewayProcess, body: bytes) -> httpx.Response:
    return client.post(
        f"{node.base_url}/webhooks/finchpay", content=body, params={"token": TOKEN}, timeout=10
    )


@dataclass
class Ledger:
    """What a provider posting through several nodes saw: every answer it got, by event id."""

    posted: int = 0
    accepted: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    unavailable: int = 0  # 503 answers
    unreachable: int = 0  # connection errors (a killed or restarting node)
    never_answered: int = 0  # events given up on after every retry
    unexpected: list[tuple[int, str]] = field(default_factory=list)  # any other answer
    statuses: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, status)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def acknowledged(self) -> set[str]:
        """Events answered `accepted` or `duplicate`: the gateway owes each a delivery."""
        return set(self.accepted) | set(self.duplicate)


def post_with_failover(
    client: httpx.Client,
    nodes: Sequence[GatewayProcess],
    first: int,
    body: bytes,
    ledger: Ledger,
    *,
    tries: int = 30,
    retry_pause: float = 0.05,
) -> None:
    """Post one event as a provider behind a load balancer would: to node `first`, and on a
    connection error or a 503 again to the next node, up to `tries` times."""
    with ledger.lock:
        ledger.posted += 1
    for attempt in range(tries):
        node = nodes[(first + attempt) % len(nodes)]
        try:
            response = post(client, node, body)
        except httpx.TransportError:
            with ledger.lock:
                ledger.unreachable += 1
            time.sleep(retry_pause)
            continue
        with ledger.lock:
            ledger.statuses.append((time.monotonic(), response.status_code))
        if response.status_code == 200:
            answer = response.json()
            with ledger.lock:
                getattr(ledger, answer["status"]).append(answer["id"])
            return
        if response.status_code != 503 or response.json() != {"error": "unavailable"}:
            with ledger.lock:
                ledger.unexpected.append((response.status_code, response.text))
            return
        with ledger.lock:
            ledger.unavailable += 1
        time.sleep(retry_pause)
    with ledger.lock:
        ledger.never_answered += 1


def run_load(
    nodes: Sequence[GatewayProcess],
    bodies: Sequence[bytes],
    *,
    threads: int,
    rate: float,
    ledger: Ledger,
    during: Callable[[], None] | None = None,
    tries: int = 30,
) -> None:
    """Post `bodies` from `threads` threads, about `rate` per second in all (event i is due at
    start + i / rate), event i first to node i mod N; `during()` runs meanwhile in this thread
    (a kill, a database stop). Returns when every post is answered or given up on."""
    counter = itertools.count()
    start = time.monotonic()

    def poster() -> None:
        with httpx.Client() as client:
            while (index := next(counter)) < len(bodies):
                delay = start + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                post_with_failover(client, nodes, index, bodies[index], ledger, tries=tries)

    workers = [threading.Thread(target=poster, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    if during is not None:
        during()
    for worker in workers:
        worker.join(timeout=len(bodies) / rate + tries * 15)
    assert not any(worker.is_alive() for worker in workers), "a poster thread did not finish"


def wait_until(predicate: Callable[[], object], timeout: float = SOON, what: str = "") -> float:
    """Poll until `predicate()` holds; the seconds it took. Fails after `timeout`."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - began


def missing(expected: Iterable[str], delivered: Iterable[str]) -> set[str]:
    return set(expected) - set(delivered)


def attempts_by(node: GatewayProcess, outcome: str | None = None) -> float:
    """Delivery attempts this node made to `ledger` (with `outcome`, or any): its own counter,
    each node counts its own sends."""
    text = httpx.get(f"{node.base_url}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "finrelay_delivery_attempts_total"
                and sample.labels.get("subscriber") == "ledger"
                and outcome in (None, sample.labels.get("outcome"))
            ):
                total += sample.value
    return total


def delivered_by(node: GatewayProcess) -> float:
    """Deliveries this node made to `ledger`."""
    return attempts_by(node, "delivered")

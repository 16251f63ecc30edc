"""`gateway serve`'s processes on SQLite (gateway/processes.py), seen from outside: the tree it
runs, real `kill -9`s of each process under load, SIGTERM under load, and a writer that cannot
start.

    parent ── writer (the only process with the database open)
           ├─ worker x N (role `ingest`, serving the port)
           └─ deliver (role `all` only)

What must hold whichever process dies (issue 16): every event that got a 200 is stored and
delivered, the dead process is started again, and while the writer is away ingress answers 503,
at once, never 500 and never a hang. The processes are told apart by the pid each logs
(`writer_started`, `started` with its role) and found as the parent's children in /proc.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty, SimpleQueue

import httpx
import pytest

from adapters.samples import sample_body
from gateway.config import deliver_process_count, load_config, worker_count
from tests.delivery.subscriber import Subscriber, always, new_hmac_secret
from tests.service.harness import REPO, GatewayProcess, free_port
from tests.support import TOKEN

# How long anything that should happen soon may take on a loaded 2-core machine.
SOON = 30.0
# Each request of the provider is bounded: a gateway that hangs shows as a timeout.
REQUEST_TIMEOUT = 10.0
# How long a provider keeps posting and retrying (503s, connection errors) before it gives up
# on the events it has left.
LOAD_SECONDS = 45.0
RETRY_PAUSE = 0.05
EVENTS = 300
PROVIDER_THREADS = 8
# How long the subscriber takes to answer while the gateway stops (the dispatcher's grace is 5 s).
SLOW_ANSWER = 1.0
EXIT_PROBLEMS = 1
EXIT_CANNOT_START = 3


def split_config(subscriber_url: str, secret: str, *, delivers: int = 2) -> str:
    """The default layout (no `[server] workers`, no `[store] writer`) with `delivers` deliver
    processes (so as not to depend on the machine's CPUs): one source, one verifying HTTP
    subscriber that gets every event."""
    return f"""
[server]
host = "127.0.0.1"
port = 0
deliver_processes = {delivers}

[store]
url = "sqlite:///./data/gateway.db"

[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"

[subscribers.ledger]
url = "{subscriber_url}"
secret = "{secret}"
retry_schedule = [0.2, 0.5, 1, 1, 1, 1, 1, 1]

[[routes]]
subscribers = ["ledger"]
"""


# The process tree, from /proc and the log.


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Running (a zombie has ended: only its parent has not read its status yet)."""
    state = _state(pid)
    return state is not None and state != "Z"


def children(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found |= {int(child) for child in (task / "children").read_text().split()}
        except OSError:
            continue
    return {child for child in found if alive(child)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def processes_in(directory: Path) -> set[int]:
    """Every running process whose working directory is `directory`: the gateway's children
    inherit it, so none of them can hide from this after their parent is gone."""
    target = os.path.realpath(directory)
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") == target and alive(int(entry.name)):
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def database_files_open(pid: int, database: Path) -> list[str]:
    """The database's files (the file, its -wal, -shm, lock) that `pid` has open."""
    prefix = os.path.realpath(database)
    opened: list[str] = []
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return opened
    for descriptor in descriptors:
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue
        if target.startswith(prefix):
            opened.append(target)
    return opened


def log_records(gateway: GatewayProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in gateway.logs().splitlines() if line.startswith("{")]


@dataclass(frozen=True)
class Tree:
    """The parent's running children, by what each logged it is."""

    parent: int
    writers: frozenset[int]
    workers: frozenset[int]  # serving the port (role `ingest`, or `all` without a writer)
    delivers: frozenset[int]
    unknown: frozenset[int]  # started, not logged yet
    trackers: frozenset[int]  # multiprocessing's resource tracker

    @property
    def all(self) -> frozenset[int]:
        return self.writers | self.workers | self.delivers | self.unknown | self.trackers


def tree(gateway: GatewayProcess) -> Tree:
    assert gateway.process is not None
    parent = gateway.process.pid
    pids = children(parent)
    writers, workers, delivers = set(), set(), set()
    for record in log_records(gateway):
        pid = record.get("pid")
        if record["event"] == "writer_started":
            writers.add(pid)
        elif record["event"] == "started" and record.get("role") == "deliver":
            delivers.add(pid)
        elif record["event"] == "started":
            workers.add(pid)
    trackers = {pid for pid in pids if b"resource_tracker" in _cmdline(pid)}
    return Tree(
        parent=parent,
        writers=frozenset(pids & writers),
        workers=frozenset(pids & workers),
        delivers=frozenset(pids & delivers),
        unknown=frozenset(pids - writers - workers - delivers - trackers),
        trackers=frozenset(trackers),
    )


def settled_tree(
    gateway: GatewayProcess, *, writers: int, workers: int, delivers: int, timeout: float = SOON
) -> Tree:
    """The tree once it has that many processes of each kind, each of which logged its start."""
    deadline = time.monotonic() + timeout
    while True:
        now = tree(gateway)
        shape = (len(now.writers), len(now.workers), len(now.delivers), len(now.unknown))
        if shape == (writers, workers, delivers, 0):
            return now
        if time.monotonic() > deadline:
            wanted = (writers, workers, delivers, 0)
            raise AssertionError(
                f"process tree not (writers, workers, delivers, unlogged) = {wanted}"
                f" in {timeout} s: {now}\n{gateway.logs()[-4000:]}"
            )
        time.sleep(0.1)


def nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def expected_workers(gateway: GatewayProcess) -> int:
    return worker_count(load_config(gateway.config_path).server)


def expected_delivers(gateway: GatewayProcess) -> int:
    return deliver_process_count(load_config(gateway.config_path).server)


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """The pids still running after `timeout` (none, at best)."""
    deadline = time.monotonic() + timeout
    while (left := {pid for pid in pids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def ready(gateway: GatewayProcess, timeout: float = SOON) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{gateway.base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"/readyz not 200 in {timeout} s"
        time.sleep(0.05)


# A provider under load.


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when it came back
    status: int | None  # None: no HTTP answer (the `error` says what)
    error: str | None
    body: bytes


@dataclass
class Provider:
    """Posts `count` distinct events from several threads at once, each until it gets a 200:
    503s and connection errors are retried after a short pause, as a provider would; every
    request is bounded by REQUEST_TIMEOUT, the whole load by LOAD_SECONDS. Every answer is
    kept."""

    gateway: GatewayProcess
    count: int = EVENTS
    threads: int = PROVIDER_THREADS
    answers: list[Answer] = field(default_factory=list)
    acknowledged: dict[int, str] = field(default_factory=dict)  # event number -> its id
    given_up: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _deadline: float = 0.0

    def start(self) -> Provider:
        self._deadline = time.monotonic() + LOAD_SECONDS
        start = datetime.now(UTC) - timedelta(minutes=1)
        todo: SimpleQueue[tuple[int, bytes]] = SimpleQueue()
        for number in range(self.count):
            todo.put((number, sample_body("finchpay", "COMPLETE", start)))
        self._workers = [
            threading.Thread(target=self._post_all, args=(todo,), daemon=True)
            for _ in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def _post_all(self, todo: SimpleQueue[tuple[int, bytes]]) -> None:
        url = f"{self.gateway.base_url}/webhooks/finchpay"
        with httpx.Client(timeout=REQUEST_TIMEOUT, params={"token": TOKEN}) as client:
            while not self.stop.is_set():
                try:
                    number, body = todo.get_nowait()
                except Empty:
                    return
                self._post_one(client, url, number, body)

    def _post_one(self, client: httpx.Client, url: str, number: int, body: bytes) -> None:
        while not self.stop.is_set() and time.monotonic() < self._deadline:
            try:
                response = client.post(url, content=body)
            except httpx.TransportError as error:
                self._keep(Answer(time.monotonic(), None, type(error).__name__, b""))
                time.sleep(RETRY_PAUSE)
                continue
            self._keep(Answer(time.monotonic(), response.status_code, None, response.content))
            if response.status_code == 200:
                with self._lock:
                    self.acknowledged[number] = response.json()["id"]
                return
            if response.status_code != 503:
                break  # not a provider's retry: the test fails on it
            time.sleep(RETRY_PAUSE)
        with self._lock:
            self.given_up.append(number)

    def _keep(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def wait_for_acknowledged(self, count: int, timeout: float = SOON) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"fewer than {count} events acknowledged"
            time.sleep(0.01)

    def join(self, timeout: float = LOAD_SECONDS + REQUEST_TIMEOUT + 10) -> None:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        assert not any(worker.is_alive() for worker in self._workers), "the provider hung"

    @property
    def ids(self) -> set[str]:
        with self._lock:
            return set(self.acknowledged.values())

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> collections.Counter[str]:
        """What came back in that time: HTTP statuses, and transport errors by name."""
        with self._lock:
            return collections.Counter(
                str(answer.status) if answer.status is not None else str(answer.error)
                for answer in self.answers
                if since <= answer.at < until
            )


class SlowRequest:
    """One webhook whose body arrives in two parts, `pause` seconds apart after `send_rest`
    is called: a request a worker is still answering when the gateway is told to stop."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
        head = (
            f"POST /webhooks/finchpay?token={TOKEN} HTTP/1.1\r\n"
            f"host: 127.0.0.1:{gateway.port}\r\n"
            f"content-length: {len(self.body)}\r\nconnection: close\r\n\r\n"
        )
        self.connection = socket.create_connection(("127.0.0.1", gateway.port), timeout=SOON)
        self.connection.sendall(head.encode() + self.body[:10])

    def finish(self, pause: float) -> tuple[int, bytes]:
        """The rest of the body after `pause` seconds; the status and body of the answer."""
        time.sleep(pause)
        with self.connection:
            self.connection.sendall(self.body[10:])
            answer = b""
            while chunk := self.connection.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body


# The shared gateway: the default layout, a verifying HTTP subscriber. The tests that end it
# (kill -9 or SIGTERM of the parent) leave it stopped; the next test that needs it starts it
# again on the same data directory (starting one is most of this module's time).


@dataclass
class Split:
    gateway: GatewayProcess
    subscriber: Subscriber

    def running(self) -> GatewayProcess:
        process = self.gateway.process
        if process is None or process.poll() is not None:
            self.gateway.start(timeout=60)
        return self.gateway

    @property
    def workers(self) -> int:
        return expected_workers(self.gateway)

    def settled(self) -> Tree:
        return settled_tree(
            self.running(),
            writers=1,
            workers=self.workers,
            delivers=expected_delivers(self.gateway),
        )

    def assert_stored_and_delivered(self, ids: set[str]) -> None:
        stored = {row.id for row in self.gateway.events()}
        assert not ids - stored, f"{len(ids - stored)} acknowledged events are not stored"
        deadline = time.monotonic() + SOON
        while missing := ids - {r.webhook_id for r in self.subscriber.received}:
            if time.monotonic() > deadline:
                example = self.gateway.event_record(min(missing))
                raise AssertionError(
                    f"{len(missing)} of {len(ids)} acknowledged events not delivered in {SOON} s;"
                    f" one of them: {example}\n{self.gateway.logs()[-3000:]}"
                )
            time.sleep(0.05)
        verified = {r.webhook_id for r in self.subscriber.received if r.fully_verified}
        assert ids <= verified


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Split]:
    secret = new_hmac_secret()
    with Subscriber([secret]) as subscriber:
        workdir = tmp_path_factory.mktemp("split")
        gateway = GatewayProcess(workdir, split_config(subscriber.url, secret), layout="default")
        shared = Split(gateway, subscriber)
        try:
            yield shared
        finally:
            shared.gateway.stop()
            print("--- gateway log ---\n" + shared.gateway.logs()[-6000:])


def restarts(gateway: GatewayProcess, process: str) -> list[dict[str, object]]:
    """The restarts of the process named `process` ("deliver": of any deliver process)."""
    return [
        record
        for record in log_records(gateway)
        if record["event"] == "process_restarted"
        and str(record.get("process")).partition("-")[0] == process
    ]


def kill_9(pid: int) -> float:
    """SIGKILL `pid` and wait until it has ended; when it was sent (time.monotonic())."""
    sent = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    assert wait_gone({pid}, 10.0) == set(), f"{pid} outlived a SIGKILL"
    return sent


def kill_9_under_load(split: Split, pid: int) -> tuple[Provider, float]:
    """The provider's load, `pid` SIGKILLed once a quarter of it was acknowledged, and the
    rest of the load to its end; the provider, and when the kill was sent."""
    provider = Provider(split.gateway).start()
    try:
        provider.wait_for_acknowledged(EVENTS // 4)
        killed_at = kill_9(pid)
        provider.join()
    finally:
        provider.stop.set()
    return provider, killed_at


# 1. The tree.


def test_the_default_layout_is_one_writer_n_workers_and_the_deliver_processes(
    split: Split,
) -> None:
    now = split.settled()
    assert len(now.delivers) == 2
    # The webhooks' answers first when the CPU is short (`server.deliver_nice`, 10 by default).
    assert {nice(pid) for pid in now.workers | now.writers} == {nice(now.parent)}
    assert {nice(pid) for pid in now.delivers} == {nice(now.parent) + 10}
    assert len(now.trackers) <= 1
    assert now.all == children(now.parent)  # nothing else runs under the parent
    (writer,) = now.writers
    assert database_files_open(writer, split.gateway.database), "the writer has no database open"
    for pid in {now.parent} | now.workers | now.delivers | now.trackers:
        assert database_files_open(pid, split.gateway.database) == [], f"{pid} opened the database"
    # uvicorn's records are JSON lines too, but a serving process's start is told once, by the
    # gateway's own `started` line: not again by uvicorn's "Application startup complete".
    uvicorn_lines = [r for r in log_records(split.gateway) if r["event"] == "uvicorn"]
    assert uvicorn_lines, "the supervisor's start is not in the log"
    assert not [r for r in uvicorn_lines if "startup" in str(r["message"]).lower()]


def test_role_ingest_runs_no_deliver_process(tmp_path: Path) -> None:
    gateway = GatewayProcess(
        tmp_path,
        split_config("http://127.0.0.1:9/none", new_hmac_secret()),
        serve_args=["--role", "ingest", "--workers", "1"],
        layout="default",
    ).start(timeout=60)
    try:
        now = settled_tree(gateway, writers=1, workers=1, delivers=0)
        assert now.all == children(now.parent)
        assert '"role":"deliver"' not in gateway.logs()
        (worker,) = now.workers
        assert database_files_open(worker, gateway.database) == []
    finally:
        gateway.stop()


def test_deliver_processes_share_a_subscriber_s_max_in_flight(tmp_path: Path) -> None:
    """Three deliver processes, a subscriber that allows 4 requests at once and answers slowly:
    it never sees more than 4 at once from the host (each process holds its share: 2, 1, 1),
    and it does see 4 (every share is used), until every event is delivered."""
    secret = new_hmac_secret()
    with Subscriber([secret], script=always(200, delay=0.3)) as subscriber:
        config = split_config(subscriber.url, secret, delivers=3).replace(
            "retry_schedule", "max_in_flight = 4\nretry_schedule"
        )
        gateway = GatewayProcess(tmp_path, config, layout="default").start(timeout=60)
        try:
            settled_tree(gateway, writers=1, workers=expected_workers(gateway), delivers=3)
            start = datetime.now(UTC) - timedelta(minutes=1)
            for _ in range(24):
                answer = gateway.post(
                    "finchpay", sample_body("finchpay", "COMPLETE", start), params={"token": TOKEN}
                )
                assert answer.status_code == 200, answer.text
            subscriber.wait_for_count(24, SOON)
            assert subscriber.max_in_flight == 4
        finally:
            gateway.stop()


def test_an_in_process_writer_runs_no_writer_process(tmp_path: Path) -> None:
    config = split_config("http://127.0.0.1:9/none", new_hmac_secret()).replace(
        "[store]\n", '[store]\nwriter = "in_process"\n'
    )
    gateway = GatewayProcess(tmp_path, config, serve_args=["--workers", "2"], layout="default")
    gateway.start(timeout=60)
    try:
        now = settled_tree(gateway, writers=0, workers=2, delivers=0)
        assert now.all == children(now.parent)
        assert '"writer_started"' not in gateway.logs()
        # Each worker opens the file itself: what the writer process is there to replace.
        for worker in now.workers:
            assert database_files_open(worker, gateway.database)
    finally:
        gateway.stop()


# 2. kill -9 of each child under load.


def test_kill_9_of_the_writer_under_load_answers_503_until_it_is_back(split: Split) -> None:
    before = split.settled()
    (writer,) = before.writers
    restarted_before = len(restarts(split.gateway, "writer"))
    provider, killed_at = kill_9_under_load(split, writer)

    assert provider.given_up == []
    assert len(provider.ids) == EVENTS
    # Before the kill, nothing but 200s; after it, 503s until the writer was back, each one
    # an answer (a hang would be a ReadTimeout), none a 500.
    assert set(provider.statuses(until=killed_at)) == {"200"}
    after = provider.statuses(since=killed_at)
    assert after["503"] > 0, after
    assert set(after) <= {"200", "503"}, after
    assert all(
        json.loads(answer.body) == {"error": "unavailable"}
        for answer in provider.answers
        if answer.status == 503
    )
    split.assert_stored_and_delivered(provider.ids)
    now = split.settled()
    (new_writer,) = now.writers
    assert new_writer != writer
    assert len(restarts(split.gateway, "writer")) == restarted_before + 1
    assert restarts(split.gateway, "writer")[-1]["pid"] == new_writer
    assert now.workers == before.workers
    assert now.delivers == before.delivers
    ready(split.gateway)


def test_kill_9_of_an_ingest_worker_under_load_loses_nothing(split: Split) -> None:
    before = split.settled()
    victim = min(before.workers)
    provider, killed_at = kill_9_under_load(split, victim)

    assert provider.given_up == []
    assert len(provider.ids) == EVENTS
    # The killed worker's connections break (a provider retries); the others go on answering.
    assert set(provider.statuses(until=killed_at)) == {"200"}
    assert set(provider.statuses(since=killed_at)) <= {
        "200",
        "RemoteProtocolError",
        "ReadError",
        "WriteError",
        "ConnectError",
    }
    split.assert_stored_and_delivered(provider.ids)
    # uvicorn's supervisor replaced it: as many workers as before, one of them new. (It logs
    # no process_restarted of ours: the new worker's `started` line shows it, and the
    # supervisor's own word of the death, as a JSON line of the gateway's log.)
    now = split.settled()
    assert victim not in now.workers
    assert len(now.workers - before.workers) == 1
    assert now.writers == before.writers
    assert now.delivers == before.delivers
    died = [
        record
        for record in log_records(split.gateway)
        if record["event"] == "uvicorn" and f"[{victim}] died" in str(record["message"])
    ]
    assert len(died) == 1, split.gateway.logs()[-4000:]
    assert died[0]["level"] == "info"
    ready(split.gateway)


def test_kill_9_of_the_deliver_process_under_load_delivers_everything(split: Split) -> None:
    before = split.settled()
    deliver = min(before.delivers)
    restarted_before = len(restarts(split.gateway, "deliver"))
    provider = Provider(split.gateway).start()
    try:
        # Some delivered, some claimed or in flight at the kill, some not yet claimed.
        split.subscriber.wait_for(
            lambda server: bool(provider.ids & {r.webhook_id for r in server.received}), SOON
        )
        kill_9(deliver)
        provider.join()
    finally:
        provider.stop.set()

    assert provider.given_up == []
    assert set(provider.statuses()) == {"200"}  # ingest never noticed
    split.assert_stored_and_delivered(provider.ids)
    now = split.settled()
    (new_deliver,) = now.delivers - before.delivers
    assert now.delivers == before.delivers - {deliver} | {new_deliver}
    assert len(restarts(split.gateway, "deliver")) == restarted_before + 1
    assert restarts(split.gateway, "deliver")[-1]["pid"] == new_deliver
    assert now.writers == before.writers
    ready(split.gateway)


# 3. kill -9 of the parent.


def test_kill_9_of_the_parent_takes_every_child_with_it_and_a_new_gateway_serves(
    split: Split,
) -> None:
    gateway = split.running()
    old = split.settled()
    provider = Provider(gateway, count=EVENTS // 3).start()
    try:
        provider.wait_for_acknowledged(EVENTS // 6)
        gateway.kill()
        left = wait_gone(set(old.all), 5.0)
    finally:
        provider.stop.set()
        provider.join()
    for pid in left:
        os.kill(pid, signal.SIGKILL)  # not to leave them to the next test
    assert not left, f"children of the killed gateway still running: {left}"
    assert processes_in(gateway.workdir) == set()

    split.running()  # a new `gateway serve` on the same data directory
    ready(gateway)
    assert not provider.ids - {row.id for row in gateway.events()}
    one_more = Provider(gateway, count=1).start()
    one_more.join()
    assert len(one_more.ids) == 1
    split.assert_stored_and_delivered(provider.ids | one_more.ids)


# 4. SIGTERM of the parent under load.


def test_sigterm_under_load_stops_the_writer_last_and_loses_nothing(split: Split) -> None:
    gateway = split.running()
    # A writer the parent restarted, as well as one it started first, must stop last.
    (writer,) = split.settled().writers
    kill_9(writer)
    old = split.settled()
    assert gateway.process is not None
    log_offset = len(gateway.logs())
    # Slow answers: at the SIGTERM the deliver process has sends under way, which it lets
    # finish before it stops, and whose attempts it then records through the writer.
    split.subscriber.script = always(200, delay=SLOW_ANSWER)
    provider = Provider(gateway).start()
    try:
        provider.wait_for_acknowledged(EVENTS // 4)
        split.subscriber.wait_for(lambda server: server.in_flight > 0, SOON, "a send under way")
        slow = SlowRequest(gateway)
        time.sleep(0.5)  # its headers read: a request under way in a worker
        gateway.process.send_signal(signal.SIGTERM)
        # The rest of its body comes after the deliver process has stopped (its sends take
        # SLOW_ANSWER), within the workers' grace (10 s): the writer must still be there.
        slow_status, slow_body = slow.finish(pause=SLOW_ANSWER * 2)
        code = gateway.process.wait(timeout=SOON)
    finally:
        provider.stop.set()
        provider.join()
        split.subscriber.script = always(200)
    assert code == 0, gateway.logs()[-4000:]
    assert slow_status == 200, slow_body
    left = wait_gone(set(old.all), 5.0)
    assert not left, f"children still running after a clean stop: {left}"
    # The writer outlived every request the workers answered: none was refused for want of it.
    statuses = provider.statuses()
    assert "503" not in statuses, statuses
    assert "500" not in statuses, statuses
    records = [
        json.loads(line)
        for line in gateway.logs()[log_offset:].splitlines()
        if line.startswith("{")
    ]
    stopped = [datetime.fromisoformat(r["timestamp"]) for r in records if r["event"] == "stopped"]
    (writer_stopped,) = [
        datetime.fromisoformat(r["timestamp"]) for r in records if r["event"] == "writer_stopped"
    ]
    assert len(stopped) == len(old.workers) + len(old.delivers)
    assert max(stopped) < writer_stopped, "the writer stopped before a process that uses it"
    assert provider.ids
    rows = {row.id: row for row in gateway.events()}
    assert not provider.ids - set(rows)
    assert json.loads(slow_body)["id"] in rows
    # Every send the subscriber acknowledged was recorded before the writer stopped: none is
    # left pending, to be sent again by the next start.
    answered = {
        r.webhook_id
        for r in split.subscriber.received
        if r.answered is not None and r.webhook_id in provider.ids
    }
    assert answered
    unrecorded = {i for i in answered if rows[i].deliveries["ledger"] != "delivered"}
    assert not unrecorded, f"{len(unrecorded)} acknowledged sends were not recorded"


# 5. A writer that cannot start.


def serve_until_exit(workdir: Path, config: str) -> tuple[int, str]:
    (workdir / "gateway.toml").write_text(config)
    completed = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", "gateway.toml", "--port", "0"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return completed.returncode, completed.stdout + completed.stderr


def test_a_newer_schema_exits_3_and_leaves_no_child(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "gateway.db") as db:
        db.execute("PRAGMA user_version = 99")
    code, output = serve_until_exit(
        tmp_path, split_config("http://127.0.0.1:9/none", new_hmac_secret())
    )
    assert code == EXIT_CANNOT_START, output
    assert "cannot_start" in output
    assert wait_gone(processes_in(tmp_path), 5.0) == set()


def test_an_unopenable_database_exits_1_and_leaves_no_child(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the database's directory should be")
    code, output = serve_until_exit(
        tmp_path, split_config("http://127.0.0.1:9/none", new_hmac_secret())
    )
    assert code == EXIT_PROBLEMS, output
    assert "cannot_start" in output
    assert wait_gone(processes_in(tmp_path), 5.0) == set()


def test_signals_to_the_whole_process_group_stop_every_process_with_exit_0(
    tmp_path: Path,
) -> None:
    # systemd's default KillMode and `timeout` signal every process of the group at once, and
    # another signal may come while the first is being handled (Ctrl-C twice, a stop and then
    # a kill timer's TERM). The parent once hung for good there: a second signal landing inside
    # its handler's Event.set() waited for the lock the first one held.
    secret = new_hmac_secret()
    subscriber = Subscriber([secret]).start()
    config = tmp_path / "gateway.toml"
    config.write_text(split_config(subscriber.url, secret))
    port = free_port()
    with (tmp_path / "gateway.log").open("ab") as log:
        parent = subprocess.Popen(
            [*SERVE, "--config", str(config), "--port", str(port)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            start_new_session=True,  # its own group, which the test signals as systemd would
        )
    try:
        deadline = time.monotonic() + SOON
        while not _answers_ready(port):
            assert parent.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)
        family = children(parent.pid)
        assert family, "no child processes"
        # A burst: one signal's handler is still running when the next ones arrive.
        for signum in [signal.SIGTERM, signal.SIGINT] * 25:
            os.killpg(parent.pid, signum)
        assert parent.wait(timeout=45) == 0
        assert wait_gone(family, 10.0) == set()
        lines = (tmp_path / "gateway.log").read_text()
        assert '"writer_stopped"' in lines
        # No child was restarted meanwhile: the burst stopped the writer and the deliver process
        # (or killed one still starting), which the parent must not take for deaths.
        assert '"process_restarted"' not in lines, lines[-6000:]
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait(timeout=10)
        subscriber.stop()


SERVE = (sys.executable, "-m", "gateway", "serve")


def _answers_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False

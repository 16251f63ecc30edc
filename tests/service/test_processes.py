"""`gateway serve`'s processes (gateway/processes.py), seen from outside: the processes it runs
and their names in `ps`, real `kill -9`s of a worker and of the supervisor under load, a new
gateway started at once after the supervisor's kill, SIGTERM under load, a port still taken,
and a store that cannot be used.

    finrelay serve: supervisor ── finrelay serve: worker 1 .. N (each receives and delivers)

What must hold whichever process dies: every event that got a 200 is stored and delivered, a
worker that dies is replaced, and a gateway started right after a `kill -9` of the supervisor
takes webhooks again within seconds. The processes are told apart by their command lines.
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
from gateway.config import load_config, worker_count
from gateway.preflight import PORT_WAIT_SECONDS
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


def gateway_config(subscriber_url: str, secret: str, *, workers: int = 2) -> str:
    """`workers` processes (so as not to depend on the machine's CPUs): one source, one
    verifying HTTP subscriber that gets every event."""
    return f"""
[server]
host = "127.0.0.1"
port = 0
workers = {workers}

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


def title(pid: int) -> str:
    """The command line as `ps` shows it (setproctitle rewrites it in place)."""
    return _cmdline(pid).replace(b"\0", b" ").decode(errors="replace").strip()


@dataclass(frozen=True)
class Tree:
    """The supervisor's running children, by what their command lines say they are."""

    parent: int
    workers: dict[int, int]  # worker number -> pid
    trackers: frozenset[int]  # multiprocessing's resource tracker
    unknown: frozenset[int]  # started, not named yet

    @property
    def all(self) -> frozenset[int]:
        return frozenset(self.workers.values()) | self.trackers | self.unknown


def tree(gateway: GatewayProcess) -> Tree:
    assert gateway.process is not None
    parent = gateway.process.pid
    workers: dict[int, int] = {}
    trackers, unknown = set(), set()
    for pid in children(parent):
        name = title(pid)
        if name.startswith("finrelay serve: worker "):
            workers[int(name.split()[3])] = pid
        elif "resource_tracker" in name:
            trackers.add(pid)
        else:
            unknown.add(pid)
    return Tree(parent, workers, frozenset(trackers), frozenset(unknown))


def settled_tree(gateway: GatewayProcess, *, workers: int, timeout: float = SOON) -> Tree:
    """The tree once workers 1..`workers` run and have each logged their start."""
    deadline = time.monotonic() + timeout
    while True:
        now = tree(gateway)
        started = {
            record.get("pid") for record in log_records(gateway) if record["event"] == "started"
        }
        if (
            sorted(now.workers) == list(range(1, workers + 1))
            and not now.unknown
            and set(now.workers.values()) <= started
        ):
            return now
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not workers 1..{workers}, each started, in {timeout} s: {now}"
                f"\n{gateway.logs()[-4000:]}"
            )
        time.sleep(0.1)


def expected_workers(gateway: GatewayProcess) -> int:
    return worker_count(load_config(gateway.config_path).server)


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


# The shared gateway: two workers, a verifying HTTP subscriber. The tests that end it (kill -9 or
# SIGTERM of the supervisor) leave it stopped; the next test that needs it starts it again on
# the same data directory (starting one is most of this module's time).


@dataclass
class Split:
    gateway: GatewayProcess
    subscriber: Subscriber

    def running(self) -> GatewayProcess:
        process = self.gateway.process
        if process is None or process.poll() is not None:
            self.gateway.start(timeout=60)
        return self.gateway

    def settled(self) -> Tree:
        return settled_tree(self.running(), workers=expected_workers(self.gateway))

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
        workdir = tmp_path_factory.mktemp("processes")
        gateway = GatewayProcess(workdir, gateway_config(subscriber.url, secret), layout="default")
        shared = Split(gateway, subscriber)
        try:
            yield shared
        finally:
            shared.gateway.stop()
            print("--- gateway log ---\n" + shared.gateway.logs()[-6000:])


def kill_9(pid: int) -> float:
    """SIGKILL `pid` and wait until it has ended; when it was sent (time.monotonic())."""
    sent = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    assert wait_gone({pid}, 10.0) == set(), f"{pid} outlived a SIGKILL"
    return sent


# 1. The processes.


def test_each_process_names_its_role_and_every_worker_opens_the_store(split: Split) -> None:
    now = split.settled()
    assert title(now.parent) == "finrelay serve: supervisor"
    assert sorted(title(pid) for pid in now.workers.values()) == [
        "finrelay serve: worker 1",
        "finrelay serve: worker 2",
    ]
    assert len(now.trackers) <= 1
    assert now.all == children(now.parent)  # nothing else runs under the supervisor
    for pid in now.workers.values():
        assert database_files_open(pid, split.gateway.database), f"{pid} has no store open"
    # Every worker receives and delivers: each logs its start with role `all` and the same
    # subscribers, and nothing of a writer or deliver process is left.
    starts = [r for r in log_records(split.gateway) if r["event"] == "started"]
    by_pid = {r["pid"]: r for r in starts}
    for pid in now.workers.values():
        assert by_pid[pid]["role"] == "all"
        assert by_pid[pid]["subscribers"] == ["ledger"]
    assert sorted(by_pid[pid]["worker"] for pid in now.workers.values()) == [1, 2]
    # uvicorn's records are JSON lines too, but a serving process's start is told once, by the
    # gateway's own `started` line: not again by uvicorn's "Application startup complete".
    uvicorn_lines = [r for r in log_records(split.gateway) if r["event"] == "uvicorn"]
    assert uvicorn_lines, "the supervisor's start is not in the log"
    assert not [r for r in uvicorn_lines if "startup" in str(r["message"]).lower()]


def test_one_worker_is_one_process_named_for_it(tmp_path: Path) -> None:
    gateway = GatewayProcess(
        tmp_path,
        gateway_config("http://127.0.0.1:9/none", new_hmac_secret(), workers=1),
        layout="default",
    ).start(timeout=60)
    try:
        assert gateway.process is not None
        assert title(gateway.process.pid) == "finrelay serve: worker 1 of 1"
        assert children(gateway.process.pid) == set()
    finally:
        assert gateway.stop() == 0


def test_role_ingest_runs_no_dispatcher_and_says_so_in_ps(tmp_path: Path) -> None:
    gateway = GatewayProcess(
        tmp_path,
        gateway_config("http://127.0.0.1:9/none", new_hmac_secret()),
        serve_args=["--role", "ingest"],
        layout="default",
    ).start(timeout=60)
    try:
        assert gateway.process is not None
        deadline = time.monotonic() + SOON
        while sorted(
            title(pid)
            for pid in children(gateway.process.pid)
            if "resource_tracker" not in title(pid)
        ) != ["finrelay serve: worker 1 (ingest)", "finrelay serve: worker 2 (ingest)"]:
            assert time.monotonic() < deadline, [title(p) for p in children(gateway.process.pid)]
            time.sleep(0.1)
        assert title(gateway.process.pid) == "finrelay serve: supervisor (ingest)"
        gateway.logs_once_they_say('"worker":2')
        gateway.logs_once_they_say('"worker":1')
        starts = [r for r in log_records(gateway) if r["event"] == "started"]
        assert len(starts) == 2
        assert all(r["role"] == "ingest" and r["subscribers"] == [] for r in starts)
    finally:
        gateway.stop()


# 2. kill -9 of a worker under load.


def test_kill_9_of_a_worker_under_load_loses_nothing_and_it_comes_back_as_itself(
    split: Split,
) -> None:
    before = split.settled()
    number, victim = min(before.workers.items())
    provider = Provider(split.gateway).start()
    try:
        provider.wait_for_acknowledged(EVENTS // 4)
        killed_at = kill_9(victim)
        provider.join()
    finally:
        provider.stop.set()

    assert provider.given_up == []
    assert len(provider.ids) == EVENTS
    # The killed worker's connections break (a provider retries); the other goes on answering.
    assert set(provider.statuses(until=killed_at)) == {"200"}
    assert set(provider.statuses(since=killed_at)) <= {
        "200",
        "RemoteProtocolError",
        "ReadError",
        "WriteError",
        "ConnectError",
    }
    # What the killed worker had leased is sent again once its heartbeat went silent.
    split.assert_stored_and_delivered(provider.ids)
    # uvicorn's supervisor replaced it, and the new worker took the number it let go of.
    now = split.settled()
    assert victim not in now.workers.values()
    assert now.workers[number] != victim
    assert {n: p for n, p in now.workers.items() if n != number} == {
        n: p for n, p in before.workers.items() if n != number
    }
    died = [
        record
        for record in log_records(split.gateway)
        if record["event"] == "uvicorn" and f"[{victim}] died" in str(record["message"])
    ]
    assert len(died) == 1, split.gateway.logs()[-4000:]
    assert died[0]["level"] == "info"
    ready(split.gateway)


# 3. kill -9 of the supervisor, and a new gateway at once.


def test_kill_9_of_the_supervisor_then_a_new_gateway_at_once_takes_webhooks_within_seconds(
    split: Split,
) -> None:
    gateway = split.running()
    old = split.settled()
    provider = Provider(gateway, count=EVENTS // 3).start()
    try:
        provider.wait_for_acknowledged(EVENTS // 6)
        gateway.kill()
        # What a process manager does: start it again at once, on the same port, while the old
        # workers are still going away (they hold the port until they have stopped).
        restarted_at = time.monotonic()
        gateway.start(timeout=SOON, port=gateway.port)
        # Its own workers, not the old ones still going away, answer by now.
        split.settled()
        serving_after = time.monotonic() - restarted_at
    finally:
        provider.stop.set()
        provider.join()
    assert wait_gone(set(old.all), 10.0) == set(), "workers of the killed gateway still run"
    # Generous for a loaded test machine; the benchmark (bench/processes.py) measures it.
    assert serving_after < SOON
    assert not provider.ids - {row.id for row in gateway.events()}
    one_more = Provider(gateway, count=1).start()
    one_more.join()
    assert len(one_more.ids) == 1
    split.assert_stored_and_delivered(provider.ids | one_more.ids)


# 4. SIGTERM of the supervisor under load.


def test_sigterm_under_load_answers_what_is_under_way_and_loses_nothing(split: Split) -> None:
    gateway = split.running()
    old = split.settled()
    assert gateway.process is not None
    # Slow answers: at the SIGTERM the workers have sends under way, which they let finish
    # before they stop, and whose attempts they then record.
    split.subscriber.script = always(200, delay=SLOW_ANSWER)
    provider = Provider(gateway).start()
    try:
        provider.wait_for_acknowledged(EVENTS // 4)
        split.subscriber.wait_for(lambda server: server.in_flight > 0, SOON, "a send under way")
        slow = SlowRequest(gateway)
        time.sleep(0.5)  # its headers read: a request under way in a worker
        gateway.process.send_signal(signal.SIGTERM)
        # The rest of its body comes within the workers' grace (10 s).
        slow_status, slow_body = slow.finish(pause=SLOW_ANSWER * 2)
        code = gateway.process.wait(timeout=SOON)
    finally:
        provider.stop.set()
        provider.join()
        split.subscriber.script = always(200)
    assert code == 0, gateway.logs()[-4000:]
    assert slow_status == 200, slow_body
    left = wait_gone(set(old.all), 5.0)
    assert not left, f"workers still running after a clean stop: {left}"
    assert processes_in(gateway.workdir) == set()
    statuses = provider.statuses()
    assert "500" not in statuses, statuses
    assert provider.ids
    rows = {row.id: row for row in gateway.events()}
    assert not provider.ids - set(rows)
    assert json.loads(slow_body)["id"] in rows
    # Every send the subscriber acknowledged was recorded before its worker stopped: none is
    # left pending, to be sent again by the next start.
    answered = {
        r.webhook_id
        for r in split.subscriber.received
        if r.answered is not None and r.webhook_id in provider.ids
    }
    assert answered
    unrecorded = {i for i in answered if rows[i].deliveries["ledger"] != "delivered"}
    assert not unrecorded, f"{len(unrecorded)} acknowledged sends were not recorded"


# 5. A port still taken, a store that cannot be used.


def serve_until_exit(workdir: Path, config: str, *args: str) -> tuple[int, str, float]:
    """`gateway serve` run to its end: its exit code, its output and how long it ran."""
    (workdir / "gateway.toml").write_text(config)
    started = time.monotonic()
    completed = subprocess.run(
        [*SERVE, "--config", "gateway.toml", "--port", "0", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return completed.returncode, completed.stdout + completed.stderr, time.monotonic() - started


def test_a_port_taken_for_a_moment_is_waited_for(tmp_path: Path) -> None:
    """Another listener holds the port until the gateway says it waits (at most 8 s, within
    its 10): the gateway then serves. Released on the gateway's word rather than after a fixed
    time, which a slow start on a loaded machine could outlast."""
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    gateway = GatewayProcess(
        tmp_path, gateway_config("http://127.0.0.1:9/none", new_hmac_secret()), layout="default"
    )

    said_while_waiting = threading.Event()

    def release_once_it_waits() -> None:
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline:
            if gateway.log_path.exists() and '"waiting_for_port"' in gateway.logs():
                said_while_waiting.set()  # written while it waits, not when it is over
                break
            time.sleep(0.05)
        holder.close()

    threading.Thread(target=release_once_it_waits, daemon=True).start()
    try:
        gateway.start(timeout=SOON, port=port)
        assert said_while_waiting.is_set()
        waiting = [r for r in log_records(gateway) if r["event"] == "waiting_for_port"]
        assert len(waiting) == 1, gateway.logs()[-3000:]
        assert waiting[0]["address"] == f"127.0.0.1:{port}"
    finally:
        holder.close()
        gateway.stop()


def test_a_newer_schema_exits_3_and_leaves_no_process(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "gateway.db") as db:
        db.execute("PRAGMA user_version = 99")
    code, output, _ = serve_until_exit(
        tmp_path, gateway_config("http://127.0.0.1:9/none", new_hmac_secret())
    )
    assert code == EXIT_CANNOT_START, output
    assert "cannot_start" in output
    assert wait_gone(processes_in(tmp_path), 5.0) == set()


def test_an_unopenable_database_exits_1_after_the_wait_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").write_text("a file where the database's directory should be")
    code, output, took = serve_until_exit(
        tmp_path, gateway_config("http://127.0.0.1:9/none", new_hmac_secret())
    )
    assert code == EXIT_PROBLEMS, output
    assert "cannot_start" in output
    assert '"waiting_for_store"' in output
    assert took >= PORT_WAIT_SECONDS
    assert wait_gone(processes_in(tmp_path), 5.0) == set()


# 6. Signals to the whole group.


def test_signals_to_the_whole_process_group_stop_every_process_with_exit_0(
    tmp_path: Path,
) -> None:
    # systemd's default KillMode and `timeout` signal every process of the group at once, and
    # another signal may come while the first is being handled (Ctrl-C twice, a stop and then
    # a kill timer's TERM).
    secret = new_hmac_secret()
    subscriber = Subscriber([secret]).start()
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_config(subscriber.url, secret))
    port = free_port()
    with (tmp_path / "gateway.log").open("ab") as log:
        parent = subprocess.Popen(
            [*SERVE, "--config", str(config), "--port", str(port)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            # TMPDIR: its run directory here, where the test can see that it is gone at the end.
            env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)},
            start_new_session=True,  # its own group, which the test signals as systemd would
        )
    try:
        deadline = time.monotonic() + SOON
        while not _answers_ready(port):
            assert parent.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.1)
        family = children(parent.pid)
        assert family, "no worker processes"
        # A burst: one signal's handler is still running when the next ones arrive.
        for signum in [signal.SIGTERM, signal.SIGINT] * 25:
            os.killpg(parent.pid, signum)
        assert parent.wait(timeout=45) == 0
        assert wait_gone(family, 10.0) == set()
        assert processes_in(tmp_path) == set()
        # Nor its run directory (the workers' number locks and metrics).
        assert list(tmp_path.glob("finrelay-*")) == []
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

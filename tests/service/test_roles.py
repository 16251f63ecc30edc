"""`server.role` / `serve --role`, `gateway migrate` and a store that refuses to start
(docs/reference/cli.md and nodes.md), against real `gateway serve` processes and a verifying HTTP
subscriber.

With SQLite, roles work among processes on one host: an `ingest` and a `deliver` process on one
database file (an absolute `sqlite:////...` URL, each process in its own working directory).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from adapters.samples import sample_body
from tests.delivery.subscriber import Subscriber, new_hmac_secret
from tests.postgres_server import PostgresServer
from tests.service.harness import REPO, GatewayProcess, free_port
from tests.support import TOKEN

# Long enough for several of the dispatcher's 1 s polls: "nothing was sent" means it.
QUIET_SECONDS = 3.0
# How long anything that should happen soon may take on a loaded 2-core machine.
SOON = 20.0
ADMIN_TOKEN = "admin-token-for-the-roles-test"
METHODS = ("POST", "GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def roles_config(store_url: str, subscriber_url: str, secret: str, role: str | None) -> str:
    server_role = "" if role is None else f'role = "{role}"\n'
    return f"""
[server]
host = "127.0.0.1"
port = 0
{server_role}
[store]
url = "{store_url}"

[admin]
token = "{ADMIN_TOKEN}"

[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"

[subscribers.ledger]
url = "{subscriber_url}"
secret = "{secret}"
retry_schedule = [0.2, 0.5]

[[routes]]
subscribers = ["ledger"]
"""


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: str, *serve_args: str, name: str = "gateway") -> GatewayProcess:
        workdir = tmp_path / f"{name}{len(started)}"
        workdir.mkdir()
        gateway = GatewayProcess(workdir, config, serve_args=serve_args)
        started.append(gateway)
        return gateway.start()

    yield start
    for gateway in started:
        gateway.stop()
        print(f"--- gateway log ({gateway.workdir}) ---\n" + gateway.logs()[-6000:])


@pytest.fixture
def subscriber() -> Iterator[tuple[Subscriber, str]]:
    secret = new_hmac_secret()
    with Subscriber([secret]) as server:
        yield server, secret


def post_event(gateway: GatewayProcess) -> str:
    body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    response = gateway.post("finchpay", body, params={"token": TOKEN})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    event_id: str = response.json()["id"]
    return event_id


def queue_depth(gateway: GatewayProcess) -> float:
    """`finrelay_delivery_queue_depth{subscriber="ledger"}`: the store's backlog (held
    deliveries included), as any process of any role reports it."""
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    line = next(
        line
        for line in text.splitlines()
        if line.startswith('finrelay_delivery_queue_depth{subscriber="ledger"}')
    )
    return float(line.rsplit(" ", 1)[1])


def log_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def started_line(gateway: GatewayProcess) -> dict[str, object]:
    return next(line for line in log_lines(gateway.logs()) if line["event"] == "started")


def assert_serves_health_metrics_and_admin(gateway: GatewayProcess) -> None:
    base = gateway.base_url
    assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz", timeout=10).json() == {"status": "ready"}
    assert httpx.get(f"{base}/metrics", timeout=10).status_code == 200
    admin = httpx.get(
        f"{base}/admin/api/subscribers",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert admin.status_code == 200, admin.text
    assert [item["name"] for item in admin.json()] == ["ledger"]


def assert_receives_no_webhooks(gateway: GatewayProcess) -> None:
    for method in METHODS:
        response = httpx.request(
            method,
            f"{gateway.base_url}/webhooks/finchpay",
            params={"token": TOKEN},
            content=b"" if method in ("GET", "HEAD", "OPTIONS") else b"{}",
            timeout=10,
        )
        assert response.status_code == 404, (method, response.text)
        if method != "HEAD":
            assert response.json() == {"error": "not_found"}, method
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-request-id"]


def test_an_ingest_process_stores_and_a_deliver_process_sends_on_one_sqlite_file(
    tmp_path: Path,
    start_gateway: Callable[..., GatewayProcess],
    subscriber: tuple[Subscriber, str],
) -> None:
    receiver, secret = subscriber
    store_url = f"sqlite:///{tmp_path / 'shared' / 'gateway.db'}"
    ingest = start_gateway(roles_config(store_url, receiver.url, secret, "ingest"), name="ingest")
    posted = [post_event(ingest) for _ in range(5)]

    # The ingest process alone: stored, pending, and sent by nobody.
    time.sleep(QUIET_SECONDS)
    assert receiver.count == 0
    assert queue_depth(ingest) == len(posted)
    assert_serves_health_metrics_and_admin(ingest)

    deliver = start_gateway(
        roles_config(store_url, receiver.url, secret, "deliver"), name="deliver"
    )
    receiver.wait_for(lambda s: set(s.answered_ok()) >= set(posted), SOON, "every event")
    assert all(received.fully_verified for received in receiver.received)
    assert {received.webhook_id for received in receiver.received} == set(posted)
    assert_receives_no_webhooks(deliver)
    assert_serves_health_metrics_and_admin(deliver)

    # Posted to the ingest process while both run: the deliver process sends it too.
    later = post_event(ingest)
    receiver.wait_for(lambda s: later in s.answered_ok(), SOON, "the later event")
    assert started_line(ingest)["role"] == "ingest"
    assert started_line(ingest)["subscribers"] == []  # it sends to none
    assert started_line(deliver)["role"] == "deliver"


def test_serve_role_overrides_the_config_and_composes_with_workers(
    tmp_path: Path,
    start_gateway: Callable[..., GatewayProcess],
    subscriber: tuple[Subscriber, str],
) -> None:
    receiver, secret = subscriber
    store_url = f"sqlite:///{tmp_path / 'shared' / 'gateway.db'}"
    # The file says ingest; the command line says deliver, over two workers: neither worker
    # takes a webhook.
    deliver = start_gateway(
        roles_config(store_url, receiver.url, secret, "ingest"),
        "--role",
        "deliver",
        "--workers",
        "2",
    )
    for _ in range(4):  # requests land on either worker
        assert_receives_no_webhooks(deliver)
    # The file says deliver; the command line says all: it receives, and sends.
    both = start_gateway(roles_config(store_url, receiver.url, secret, "deliver"), "--role", "all")
    event_id = post_event(both)
    receiver.wait_for(lambda s: event_id in s.answered_ok(), SOON, "the event")


def test_serve_rejects_an_unknown_role(tmp_path: Path) -> None:
    gateway = GatewayProcess(
        tmp_path, roles_config("sqlite:///./data/g.db", "http://x/", "s", None)
    )
    result = gateway.gateway_cli("serve", "--role", "receiver")
    assert result.returncode == 2
    assert "invalid choice: 'receiver'" in result.stderr


# --- gateway migrate ----------------------------------------------------------------------------


def migrate_config(store_url: str) -> str:
    return roles_config(store_url, "http://127.0.0.1:9/hook", new_hmac_secret(), None)


def test_migrate_creates_a_sqlite_schema_then_finds_it_current(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "gateway.db"
    gateway = GatewayProcess(tmp_path, migrate_config(f"sqlite:///{database}"))
    first = gateway.gateway_cli("migrate")
    assert first.returncode == 0, first.stderr
    (line,) = first.stdout.splitlines()
    assert line.startswith(f"sqlite:///{database}: schema version ")
    version = int(line.rsplit(" ", 1)[1])
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == version
    again = gateway.gateway_cli("migrate")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


def test_migrate_creates_a_postgresql_schema_then_finds_it_current(
    tmp_path: Path, postgres_url: str
) -> None:
    password = postgres_url.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
    gateway = GatewayProcess(tmp_path, migrate_config(postgres_url))
    first = gateway.gateway_cli("migrate")
    assert first.returncode == 0, first.stderr
    (line,) = first.stdout.splitlines()
    shown = postgres_url.replace(password, "****")
    assert line.startswith(f"{shown}: schema version "), line
    assert int(line.rsplit(" ", 1)[1]) >= 1
    again = gateway.gateway_cli("migrate")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert password not in first.stdout + first.stderr + again.stdout + again.stderr


def newer_sqlite_database(path: Path) -> None:
    """A database file a newer gateway made: its schema version is beyond this one's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")


def test_migrate_refuses_a_newer_sqlite_schema_with_exit_1(tmp_path: Path) -> None:
    database = tmp_path / "data" / "gateway.db"
    newer_sqlite_database(database)
    gateway = GatewayProcess(tmp_path, migrate_config(f"sqlite:///{database}"))
    result = gateway.gateway_cli("migrate")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "has schema version 99, newer than this gateway's" in result.stderr
    assert "Traceback" not in result.stderr
    # Every command that opens the store says the same, without a traceback.
    listed = gateway.gateway_cli("dead-letters")
    assert listed.returncode == 1
    assert "has schema version 99, newer than this gateway's" in listed.stderr
    assert "Traceback" not in listed.stderr


def test_migrate_says_a_postgresql_store_is_unreachable_without_its_password(
    tmp_path: Path,
) -> None:
    password = "pw@secret/:%"
    url = f"postgresql://finrelay:pw%40secret%2F%3A%25@127.0.0.1:{free_port()}/finrelay"
    gateway = GatewayProcess(tmp_path, migrate_config(url))
    result = gateway.gateway_cli("migrate")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "store unavailable" in result.stderr
    assert "Traceback" not in result.stderr
    for secret in (password, "pw%40secret%2F%3A%25", "secret"):
        assert secret not in result.stderr


# --- A store that refuses: a schema newer than this gateway -------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_a_newer_sqlite_schema_with_exit_3(tmp_path: Path, workers: str) -> None:
    gateway = GatewayProcess(tmp_path, migrate_config("sqlite:///./data/gateway.db"))
    newer_sqlite_database(gateway.database)
    result = gateway.gateway_cli("serve", "--port", "0", "--workers", workers)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = log_lines(result.stdout)
    refusals = [line for line in lines if line["event"] == "cannot_start"]
    assert len(refusals) == 1
    assert "has schema version 99, newer than this gateway's" in refusals[0]["detail"]
    assert not any(line["event"] in ("listening", "started") for line in lines)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_refuses_a_newer_postgresql_schema_with_exit_3(
    tmp_path: Path, postgres_url: str, workers: str
) -> None:
    import psycopg

    gateway = GatewayProcess(tmp_path, migrate_config(postgres_url))
    assert gateway.gateway_cli("migrate").returncode == 0
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE finrelay_schema SET version = 99")
    result = gateway.gateway_cli("serve", "--port", "0", "--workers", workers)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = log_lines(result.stdout)
    refusals = [line for line in lines if line["event"] == "cannot_start"]
    # Each worker reads the schema itself (a shared store is opened by the app, not before).
    assert 1 <= len(refusals) <= int(workers)
    assert "has schema version 99, newer than this gateway's" in str(refusals[0]["detail"])
    assert not any(line["event"] == "started" for line in lines)


# --- A node on PostgreSQL while the database is away --------------------------------------------


def start_without_waiting_for_the_store(gateway: GatewayProcess, timeout: float = 20.0) -> None:
    """`gateway serve` started and answering /healthz, whatever /readyz says (the harness's
    `start` waits for ready, which a node without its database is not)."""
    gateway.port = free_port()
    with gateway.log_path.open("ab") as log:
        gateway.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gateway", "serve"),
                *("--config", str(gateway.config_path), "--port", str(gateway.port)),
                # The harness's layout (one process unless the test said otherwise): with two
                # workers, /readyz from one says nothing of the other's store.
                *gateway.serve_args,
            ],
            cwd=gateway.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**gateway.env, "PYTHONPATH": str(REPO)},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert gateway.process.poll() is None, gateway.logs()
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{gateway.base_url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"no /healthz in {timeout} s:\n{gateway.logs()}")


def wait_for_readyz(gateway: GatewayProcess, status: int, timeout: float = SOON) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{gateway.base_url}/readyz", timeout=5)
        if response.status_code == status:
            answer: dict[str, str] = response.json()
            return answer
        assert time.monotonic() < deadline, f"/readyz not {status} in {timeout} s: {response.text}"
        time.sleep(0.1)


def test_a_node_waits_for_postgresql_and_recovers_by_itself_without_showing_its_password(
    tmp_path: Path, subscriber: tuple[Subscriber, str]
) -> None:
    receiver, secret = subscriber
    # Its own cluster, stopped and started by this test (never the shared one).
    database = PostgresServer()
    password = database.password
    encoded = quote(password, safe="")
    gateway = GatewayProcess(tmp_path, roles_config(database.url, receiver.url, secret, None))
    try:
        # Not started yet: the node serves /healthz, and 503 to /readyz and to webhooks.
        start_without_waiting_for_the_store(gateway)
        waiting = wait_for_readyz(gateway, 503)
        assert waiting["detail"].startswith("waiting for the store: cannot open the store:")
        body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
        refused = gateway.post("finchpay", body, params={"token": TOKEN})
        assert (refused.status_code, refused.json()) == (503, {"error": "unavailable"})
        gateway.logs_once_they_say('"store_unavailable"')

        # It comes: the node opens it (creating the schema) and delivers, by itself.
        database.start()
        wait_for_readyz(gateway, 200)
        first = post_event(gateway)
        receiver.wait_for(lambda s: first in s.answered_ok(), SOON, "the first event")

        # It goes away under a running node: /readyz says so (without the password), then
        # the node recovers by itself once it is back.
        database.stop()
        down = wait_for_readyz(gateway, 503)
        assert down["detail"].startswith("the store is unavailable:")
        admin = httpx.get(
            f"{gateway.base_url}/admin/api/events",
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        assert admin.status_code == 503, admin.text
        database.start()
        wait_for_readyz(gateway, 200)
        second = post_event(gateway)
        receiver.wait_for(lambda s: second in s.answered_ok(), SOON, "the second event")
        assert all(received.fully_verified for received in receiver.received)

        assert started_line(gateway)["store"] == database.url.replace(encoded, "****")
        shown = json.dumps([waiting, down]) + admin.text + gateway.logs()
        for text in (password, encoded, password[:9]):
            assert text not in shown
    finally:
        gateway.stop()
        database.shutdown()
        print(gateway.logs()[-6000:])


def test_a_node_waiting_for_another_nodes_migration_answers_503_until_it_is_done(
    tmp_path: Path, postgres_url: str, subscriber: tuple[Subscriber, str]
) -> None:
    import psycopg

    from gateway.store.postgres.schema import SCHEMA_LOCK

    receiver, secret = subscriber
    gateway = GatewayProcess(tmp_path, roles_config(postgres_url, receiver.url, secret, None))
    # Another node migrating holds the schema lock (tests/store has the lock's own tests).
    with psycopg.connect(postgres_url, autocommit=True) as migrating:
        migrating.execute("SELECT pg_advisory_lock(%s, %s)", SCHEMA_LOCK)
        try:
            start_without_waiting_for_the_store(gateway)
            time.sleep(1.5)  # past the app's wait for a store that opens at once
            assert wait_for_readyz(gateway, 503)["detail"].startswith("the store is being opened")
            body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
            refused = gateway.post("finchpay", body, params={"token": TOKEN})
            assert (refused.status_code, refused.json()) == (503, {"error": "unavailable"})
            migrating.execute("SELECT pg_advisory_unlock(%s, %s)", SCHEMA_LOCK)
            wait_for_readyz(gateway, 200)
            event_id = post_event(gateway)
            receiver.wait_for(lambda s: event_id in s.answered_ok(), SOON, "the event")
        finally:
            gateway.stop()
            print(gateway.logs()[-6000:])

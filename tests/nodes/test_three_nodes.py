"""Three gateway nodes on one PostgreSQL database behave as one gateway (docs/reference/nodes.md).

Each node is a real `gateway serve` on its own port with the same config (one database of the
shared test cluster), and one verifying HTTP subscriber (tests/delivery/subscriber.py: every
request checked with the `standardwebhooks` package, every webhook-id counted) receives what all
three send. Posting threads play providers behind a load balancer: event i goes to node i mod 3
first, and to the next node on a connection error or a 503.

The three nodes are started once for this module (starting three gateways costs seconds of CPU);
each test gets a fresh subscriber on the same port, and checks only the events it posted.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import msgspec
import pytest

from tests.delivery.subscriber import Received, Reply, Subscriber, always, new_hmac_secret
from tests.nodes.cluster import (
    SOON,
    Cluster,
    Ledger,
    delivered_by,
    ledger,
    missing,
    new_body,
    node_config,
    post,
    run_load,
    wait_until,
)
from tests.postgres_server import PostgresServer
from tests.service.harness import free_port

NODES = 3
# The whole gateway's (docs/reference/nodes.md): the nodes together never have more sends to
# `ledger` under way than this, so it also bounds what one killed node can have had in flight.
MAX_IN_FLIGHT = 8
# What "within about a second" may take on a loaded 2-core machine.
PROMPT_SECONDS = 2.5
# A killed node's leases are given back 5 s after its last heartbeat, and run out after 11 s
# (3 x timeout_seconds + 5) at the latest: its sends are under way again well within this.
SETTLE_SECONDS = 30.0


@pytest.fixture(scope="module")
def shared_secret() -> str:
    return new_hmac_secret()


@pytest.fixture(scope="module")
def subscriber_port() -> int:
    return free_port()


@pytest.fixture
def subscriber(shared_secret: str, subscriber_port: int) -> Iterator[Subscriber]:
    """A fresh subscriber for each test, where the module's nodes send."""
    server = Subscriber([shared_secret], port=subscriber_port).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def three_nodes(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    shared_secret: str,
    subscriber_port: int,
) -> Iterator[Cluster]:
    subscriber_block = ledger(
        f"http://127.0.0.1:{subscriber_port}/hook",
        shared_secret,
        timeout_seconds=2,
        retry_schedule=[0.2, 0.5, 1],
        max_in_flight=MAX_IN_FLIGHT,
    )
    config = node_config(postgres_server.create_database(), subscriber_block)
    cluster = Cluster(Path(tmp_path_factory.mktemp("three-nodes")), [config] * NODES)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        print(cluster.logs())  # shown by pytest only when a test failed


def _all_verified(subscriber: Subscriber) -> bool:
    return all(r.fully_verified and r.verified_by_standardwebhooks for r in subscriber.received)


def _no_password_in_logs(cluster: Cluster, server: PostgresServer) -> None:
    logs = cluster.logs()
    assert server.password not in logs
    assert quote(server.password, safe="") not in logs


def test_events_posted_across_three_nodes_are_each_delivered(
    three_nodes: Cluster, subscriber: Subscriber, postgres_server: PostgresServer
) -> None:
    bodies = [new_body() for _ in range(300)]
    answers = Ledger()
    before = [delivered_by(node) for node in three_nodes.nodes]
    run_load(three_nodes.nodes, bodies, threads=6, rate=1000, ledger=answers)

    assert answers.never_answered == answers.unavailable == answers.unreachable == 0
    assert not answers.unexpected
    assert len(set(answers.accepted)) == 300
    assert not answers.duplicate
    wait_until(
        lambda: not missing(answers.accepted, subscriber.answered_ok()),
        SOON,
        "every accepted event delivered",
    )
    after = [delivered_by(node) for node in three_nodes.nodes]
    per_node = [sent - earlier for sent, earlier in zip(after, before, strict=True)]
    print(
        f"posted 300 across {NODES} nodes: accepted {len(answers.accepted)}, delivered"
        f" {len(subscriber.answered_ok())}, duplicates {subscriber.duplicates()};"
        f" sent per node {per_node}"
    )
    assert subscriber.duplicates() == 0
    assert sum(per_node) == 300  # each counted once, by the node that sent it
    assert _all_verified(subscriber)
    _no_password_in_logs(three_nodes, postgres_server)


def _race(cluster: Cluster, body: bytes, racers: int) -> list[httpx.Response]:
    """`racers` copies of one event, posted at once (a barrier) round robin over the nodes."""
    barrier = threading.Barrier(racers, timeout=SOON)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def race(number: int) -> None:
        node = cluster[number % len(cluster)]
        with httpx.Client() as client:
            client.get(f"{node.base_url}/healthz", timeout=10)  # connected before the start
            barrier.wait()
            response = post(client, node, body)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SOON)
    assert len(answers) == racers
    return answers


def test_the_same_event_raced_to_three_nodes_is_accepted_once_and_delivered_once(
    three_nodes: Cluster, subscriber: Subscriber
) -> None:
    racers = NODES * 4
    ids: list[str] = []
    for _ in range(3):
        answers = _race(three_nodes, new_body(), racers)
        assert {response.status_code for response in answers} == {200}
        statuses = sorted(response.json()["status"] for response in answers)
        assert statuses == ["accepted"] + ["duplicate"] * (racers - 1)
        assert len({response.json()["id"] for response in answers}) == 1
        ids.append(answers[0].json()["id"])

    wait_until(lambda: not missing(ids, subscriber.answered_ok()), SOON, "the raced events sent")
    time.sleep(1.5)  # more than a poll: a second copy would be on its way by now
    assert {event_id: len(subscriber.for_id(event_id)) for event_id in ids} == dict.fromkeys(ids, 1)


def test_a_node_killed_under_load_loses_no_acknowledged_event(
    three_nodes: Cluster, subscriber: Subscriber
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    # Each send takes a moment, so that the victim has sends under way when it dies.
    subscriber.script = always(200, delay=0.03)
    bodies = [new_body() for _ in range(600)]
    answers = Ledger()
    victim_number = rng.randrange(NODES)
    victim = three_nodes[victim_number]
    killed_at: list[float] = []

    def kill_and_restart() -> None:
        time.sleep(rng.uniform(0.5, 2.0))
        victim.kill()  # SIGKILL: mid-request, mid-commit, mid-send, wherever it is
        killed_at.append(time.monotonic())
        time.sleep(rng.uniform(0.0, 0.5))
        victim.start(timeout=SOON)

    # 600 events over 3 s from 6 threads; the kill lands somewhere in the first 2 s.
    run_load(
        three_nodes.nodes, bodies, threads=6, rate=200, ledger=answers, during=kill_and_restart
    )

    acknowledged = answers.acknowledged
    assert answers.never_answered == 0
    assert not answers.unexpected
    assert killed_at, "the node was not killed"
    assert killed_at[0] < max(at for at, _ in answers.statuses), "killed after the load"
    wait_until(
        lambda: not missing(acknowledged, subscriber.answered_ok()),
        SOON,
        "every acknowledged event delivered",
    )
    # What the victim had in flight goes out again once its leases are given back (5 s after
    # its last heartbeat): only then are the duplicates all counted.
    wait_until(lambda: _settled(three_nodes), SETTLE_SECONDS, "nothing left pending")
    duplicated = {
        event_id: requests
        for event_id, requests in subscriber.request_counts().items()
        if requests > 1
    }
    print(
        f"seed {seed}: node{victim_number} killed under load; posted {answers.posted}, acknowledged"
        f" {len(acknowledged)} ({len(set(answers.accepted))} accepted,"
        f" {len(set(answers.duplicate))} duplicate), connection errors {answers.unreachable},"
        f" delivered {len(subscriber.answered_ok())}, duplicate deliveries"
        f" {subscriber.duplicates()} (at most {MAX_IN_FLIGHT} can be in flight on one node)"
    )
    assert len(set(answers.accepted)) == len(answers.accepted), "an event accepted twice"
    assert subscriber.duplicates() <= MAX_IN_FLIGHT
    # Only what the victim had under way can go out twice: the first copy left before it died.
    for event_id in duplicated:
        assert subscriber.for_id(event_id)[0].arrived <= killed_at[0] + 0.05, event_id
    assert _all_verified(subscriber)


def _settled(cluster: Cluster) -> bool:
    """No delivery pending or held in the cluster's store (read through one node's config)."""
    counts = cluster[0].stats()
    return counts["pending"] + counts["held"] == 0


def _dead_letters(cluster: Cluster, number: int) -> list[dict[str, object]]:
    done = cluster[number].gateway_cli("dead-letters", "--json")
    assert done.returncode == 0, done.stderr
    return [msgspec.json.decode(line) for line in done.stdout.splitlines()]


def test_cli_commands_against_one_nodes_config_take_effect_on_the_running_nodes(
    three_nodes: Cluster, subscriber: Subscriber
) -> None:
    failing = True

    def script(received: Received) -> Reply:
        return Reply(400 if failing else 200)  # a 400 fails the delivery at once: a dead letter

    cluster = three_nodes
    # The nodes are the module's: an earlier test's deliveries must not die here and be
    # redriven with this test's.
    wait_until(lambda: _settled(cluster), SETTLE_SECONDS, "earlier tests' deliveries settled")
    subscriber.script = script
    before = subscriber.count
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    ids = []
    with httpx.Client() as client:
        for number in range(6):
            response = post(client, cluster[number % NODES], new_body())
            assert response.json()["status"] == "accepted"
            ids.append(response.json()["id"])
    subscriber.wait_for_count(before + 6, SOON)
    time.sleep(0.3)  # each node records its 400 as a dead letter right after the answer

    # Listed by a CLI run against any node's config.
    wait_until(
        lambda: {letter["event_id"] for letter in _dead_letters(cluster, 1)} >= set(ids),
        SOON,
        "six dead letters",
    )
    failing = False
    # The command's own commit is what the nodes act on: time their sends from it, whether they
    # arrive before the command has even exited (the usual case) or after.
    redriven = cluster[2].gateway_cli("redrive", "--since", since)
    returned = time.monotonic()
    assert redriven.returncode == 0, redriven.stderr
    assert redriven.stdout.strip() == "redriven: 6"
    wait_until(lambda: not missing(ids, subscriber.answered_ok()), SOON, "the redriven sent")
    redriven_in = max(subscriber.for_id(event_id)[-1].arrived for event_id in ids) - returned

    replayed = cluster[0].gateway_cli("replay", ids[0])
    returned = time.monotonic()
    assert replayed.returncode == 0, replayed.stderr
    wait_until(lambda: subscriber.answered_ok()[ids[0]] == 2, SOON, "the replayed event sent")
    replayed_in = subscriber.for_id(ids[0])[-1].arrived - returned
    print(
        f"sent {redriven_in:+.2f} s (redrive) and {replayed_in:+.2f} s (replay) from the command's"
        " exit (negative: before it had exited)"
    )
    assert redriven_in < PROMPT_SECONDS
    assert replayed_in < PROMPT_SECONDS
    assert _all_verified(subscriber)

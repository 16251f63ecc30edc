"""docs/reference/delivery.md (delivery), against a real `gateway serve` and real HTTP subscribers.

Each test starts its own gateway (tests/service/harness.py) with a config naming one or more
subscribers from tests/delivery/subscriber.py, posts FinchPay events (token auth, the cheapest
to make), and watches what the subscribers get and what the store and the CLI say.

Timing: retry schedules are tiny. Waits poll with a deadline; lower bounds on time (a retry must
not come early) are asserted, upper bounds only as generous deadlines. The few fixed waits are
there to show that something does NOT happen, and are as short as the poll interval allows.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.samples import sample_body
from gateway import __version__
from gateway.store.base import Attempt
from tests.delivery.subscriber import (
    Received,
    Reply,
    Subscriber,
    always,
    first_attempts,
    first_requests,
    new_ed25519_secret,
    new_hmac_secret,
)
from tests.service.harness import GatewayProcess, free_port
from tests.support import FINCHPAY_GATEWAY, TOKEN

# The gateway polls its store about once a second: how long "not sent" must hold to mean it.
QUIET_SECONDS = 1.2
# How long anything that should happen soon may take on a loaded 2-core machine.
SOON = 20.0
# Clocks: the subscriber's time.monotonic() gaps vs. the gateway's time.time() schedule.
EPSILON = 0.005

HEADER = FINCHPAY_GATEWAY


# Config.


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise TypeError(value)


def subscriber_toml(name: str, url: str, secrets: Sequence[str], **settings: object) -> str:
    lines = [f"[subscribers.{name}]", f"url = {_toml(url)}"]
    if len(secrets) == 1:
        lines.append(f"secret = {_toml(secrets[0])}")
    else:
        lines.append(f"secrets = {_toml(list(secrets))}")
    lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def config(*subscribers: str, routed: Sequence[str]) -> str:
    route = f"[[routes]]\nsubscribers = {_toml(list(routed))}\n"
    return HEADER + "\n" + "\n".join(subscribers) + "\n" + route


# Fixtures: every gateway and subscriber a test starts is stopped after it.


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[[str], GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config_text: str) -> GatewayProcess:
        workdir = tmp_path / f"gateway{len(started)}"
        workdir.mkdir()
        gateway = GatewayProcess(workdir, config_text).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
        # Shown by pytest only when the test failed.
        print(f"--- gateway log ({gateway.workdir}) ---\n" + gateway.logs()[-6000:])


@pytest.fixture
def subscriber() -> Iterator[Callable[..., Subscriber]]:
    started: list[Subscriber] = []

    def start(*args: object, **kwargs: object) -> Subscriber:
        server = Subscriber(*args, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# Helpers.


def wait_until(predicate: Callable[[], object], timeout: float = SOON, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        time.sleep(0.05)


def post_event(gateway: GatewayProcess) -> str:
    body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    response = gateway.post("finchpay", body, params={"token": TOKEN})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    event_id: str = response.json()["id"]
    return event_id


async def _post_many(gateway: GatewayProcess, n: int, concurrency: int) -> list[str]:
    url = f"{gateway.base_url}/webhooks/finchpay"
    # httpx's async pool costs more CPU per request the more connections it holds: 16 posts at
    # a time keep the gateway busy at a fraction of the client CPU that 50 cost.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def post() -> str:
            body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
            async with slots:
                response = await client.post(url, content=body, params={"token": TOKEN})
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "accepted"
            event_id: str = response.json()["id"]
            return event_id

        return await asyncio.gather(*(post() for _ in range(n)))


def post_many(gateway: GatewayProcess, n: int, concurrency: int = 16) -> list[str]:
    """Post n new events, `concurrency` at a time; their ids, in no particular order."""
    return asyncio.run(_post_many(gateway, n, concurrency))


def deliveries(
    gateway: GatewayProcess, event_ids: Sequence[str]
) -> dict[str, dict[str, tuple[str, int]]]:
    """(state, attempts recorded) of each delivery of each of `event_ids`, by event id and
    subscriber: one read of the store for them all."""
    records = gateway.event_records(event_ids)
    return {
        event_id: {
            delivery.subscriber: (delivery.state, len(delivery.attempts))
            for delivery in records[event_id].deliveries
        }
        for event_id in event_ids
    }


def delivery(gateway: GatewayProcess, event_id: str, subscriber: str) -> tuple[str, int]:
    return deliveries(gateway, [event_id])[event_id][subscriber]


def all_delivered(gateway: GatewayProcess, event_ids: Sequence[str], subscriber: str) -> bool:
    return all(
        states[subscriber][0] == "delivered" for states in deliveries(gateway, event_ids).values()
    )


def undelivered(gateway: GatewayProcess) -> int:
    """Deliveries not delivered (yet): pending, held or dead."""
    stats = gateway.stats()
    return stats["pending"] + stats["held"] + stats["dead"]


def all_attempts(gateway: GatewayProcess) -> list[Attempt]:
    """Every attempt recorded, of every delivery of every stored event."""
    records = gateway.event_records().values()
    return [
        attempt
        for record in records
        for delivery in record.deliveries
        for attempt in delivery.attempts
    ]


def attempt_rows(
    gateway: GatewayProcess, event_id: str, subscriber: str
) -> list[tuple[object, ...]]:
    """(outcome, status_code, error, started_at) of each attempt, in order."""
    record = gateway.event_record(event_id)
    assert record is not None, event_id
    (found,) = (delivery for delivery in record.deliveries if delivery.subscriber == subscriber)
    attempts = sorted(found.attempts, key=lambda attempt: attempt.started_at)
    return [(a.outcome, a.status_code, a.error, a.started_at) for a in attempts]


def stored_body(gateway: GatewayProcess, event_id: str) -> bytes:
    record = gateway.event_record(event_id)
    assert record is not None, event_id
    return record.body


def is_dead(gateway: GatewayProcess, event_id: str, subscriber: str) -> bool:
    return delivery(gateway, event_id, subscriber)[0] == "dead"


def dead_letters(gateway: GatewayProcess, *args: str) -> list[list[str]]:
    """The rows under the header line: event_id, subscriber, attempts, dead_at, last_error."""
    result = gateway.gateway_cli("dead-letters", *args)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["event_id", "subscriber", "attempts", "dead_at", "last_error"]
    return [line.split("\t") for line in rows if line]


def dead_letters_json(gateway: GatewayProcess, *args: str) -> list[dict[str, object]]:
    result = gateway.gateway_cli("dead-letters", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line]


def cli_ok(gateway: GatewayProcess, *args: str) -> str:
    result = gateway.gateway_cli(*args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout.strip()


def assert_gaps_at_least(requests: Sequence[Received], delays: Sequence[float]) -> None:
    """Request k+1 came no earlier than `delays[k]` after request k arrived."""
    assert len(requests) == len(delays) + 1
    for k, delay in enumerate(delays):
        gap = requests[k + 1].arrived - requests[k].arrived
        assert gap >= delay - EPSILON, f"attempt {k + 2} came {gap:.3f} s after, not {delay} s"


def assert_timestamps_are_of_each_attempt(
    requests: Sequence[Received], delays: Sequence[float]
) -> None:
    """webhook-timestamp: not decreasing, stamped before arrival, and after the previous wait."""
    stamps = [r.webhook_timestamp for r in requests]
    assert all(isinstance(stamp, int) for stamp in stamps), stamps
    assert stamps == sorted(stamps)  # type: ignore[type-var]
    for r in requests:
        assert r.webhook_timestamp is not None
        assert r.webhook_timestamp <= r.arrived_wall
    for k, delay in enumerate(delays):
        # Attempt k+2 is stamped once the wait after attempt k+1 is over.
        floor = math.floor(requests[k].arrived_wall + delay - EPSILON)
        assert (requests[k + 1].webhook_timestamp or 0) >= floor, (k, stamps)


# 1. The canonical event arrives intact, signed as the spec says.


def test_canonical_event_arrives_intact_signed_v1_v1a_rotated_and_mixed(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    hmac_only = new_hmac_secret()
    ed_secret, ed_public = new_ed25519_secret()
    old, new = new_hmac_secret(), new_hmac_secret()
    mixed_hmac = new_hmac_secret()
    mixed_ed, mixed_public = new_ed25519_secret()

    v1 = subscriber([hmac_only])
    v1a = subscriber([], [ed_public])
    rotating = subscriber([old, new])
    mixed = subscriber([mixed_hmac], [mixed_public])
    gateway = start_gateway(
        config(
            subscriber_toml("v1", v1.url, [hmac_only]),
            subscriber_toml("v1a", v1a.url, [ed_secret]),
            subscriber_toml("rotating", rotating.url, [old, new]),
            subscriber_toml("mixed", mixed.url, [mixed_hmac, mixed_ed]),
            routed=["v1", "v1a", "rotating", "mixed"],
        )
    )
    event_id = post_event(gateway)
    body = stored_body(gateway, event_id)
    stored = msgspec.json.decode(body)
    for server in (v1, v1a, rotating, mixed):
        server.wait_for_count(1, SOON)
    time.sleep(0.3)  # no second request follows a 2xx

    for name, server in (("v1", v1), ("v1a", v1a), ("rotating", rotating), ("mixed", mixed)):
        (request,) = server.received
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/cloudevents+json", name
        assert request.headers["user-agent"] == f"finrelay/{__version__}", name
        assert request.webhook_id == event_id, name
        assert request.webhook_timestamp is not None
        assert abs(request.webhook_timestamp - request.arrived_wall) < 60, name
        assert request.body == body, f"{name}: the body is not the stored event byte for byte"
        # A structured-mode CloudEvent, as the cloudevents SDK reads it.
        assert request.event_error is None, (name, request.event_error)
        event = request.event
        assert event.get_specversion() == "1.0"
        assert event.get_id() == event_id
        assert event.get_source() == stored["source"] == "/sources/finchpay"
        assert event.get_type() == stored["type"] == "payment.succeeded"
        assert event.get_data() == stored["data"]
        assert event.get_extension("provider") == "finchpay"
        assert request.fully_verified, (name, request.signatures)
        assert delivery(gateway, event_id, name) == ("delivered", 1)

    # v1: the standardwebhooks package accepts it unchanged.
    (request,) = v1.received
    assert [version for version, _ in request.signatures] == ["v1"]
    assert request.verified_by_standardwebhooks == {0}
    # v1a: one Ed25519 signature, verified with the public key of the whsk_ seed.
    (request,) = v1a.received
    assert [version for version, _ in request.signatures] == ["v1a"]
    assert request.v1a_matches == [0]
    # Rotation: one v1 signature per secret, each verifying with its own secret.
    (request,) = rotating.received
    assert [version for version, _ in request.signatures] == ["v1", "v1"]
    assert sorted(m for m in request.v1_matches if m is not None) == [0, 1]
    assert request.verified_by_standardwebhooks == {0, 1}
    # Mixed: a v1 and a v1a; standardwebhooks skips the v1a and accepts the v1.
    (request,) = mixed.received
    assert sorted(version for version, _ in request.signatures) == ["v1", "v1a"]
    assert request.v1_matches == [0]
    assert request.v1a_matches == [0]
    assert request.verified_by_standardwebhooks == {0}


# 2. Outages: retried on schedule, with Retry-After, until the subscriber is back.


@pytest.mark.parametrize(
    ("failing", "schedule", "expected_gaps"),
    [
        # Attempt n+1 waits retry_schedule[n-1]: a rising schedule shows the order.
        (Reply(503), [0.2, 0.4, 0.6, 0.3], [0.2, 0.4, 0.6]),
        # Retry-After longer than the schedule wins.
        (Reply(503, {"retry-after": "1"}), [0.3, 0.3, 0.3, 0.3], [1.0, 1.0]),
        (Reply(429, {"retry-after": "2"}), [0.3, 0.3], [2.0]),
    ],
    ids=["503-schedule", "503-retry-after-1", "429-retry-after-2"],
)
def test_outage_is_retried_on_schedule_until_delivered(
    start_gateway: Callable[[str], GatewayProcess],
    subscriber: Callable[..., Subscriber],
    failing: Reply,
    schedule: list[float],
    expected_gaps: list[float],
) -> None:
    outage = len(expected_gaps)
    secret = new_hmac_secret()
    server = subscriber([secret], script=first_attempts(outage, failing))
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", server.url, [secret], retry_schedule=schedule),
            routed=["ledger"],
        )
    )
    event_id = post_event(gateway)
    wait_until(lambda: delivery(gateway, event_id, "ledger")[0] == "delivered", what="delivered")
    time.sleep(0.3)  # nothing more after the 2xx

    requests = server.received
    assert len(requests) == outage + 1
    assert {r.webhook_id for r in requests} == {event_id}
    assert [r.reply.status for r in requests if r.reply] == [failing.status] * outage + [200]
    assert all(r.fully_verified for r in requests)
    assert all(r.body == requests[0].body for r in requests)
    assert_gaps_at_least(requests, expected_gaps)
    assert_timestamps_are_of_each_attempt(requests, expected_gaps)

    rows = attempt_rows(gateway, event_id, "ledger")
    assert [row[0] for row in rows] == ["retry"] * outage + ["delivered"]
    assert [row[1] for row in rows] == [failing.status] * outage + [200]
    assert delivery(gateway, event_id, "ledger") == ("delivered", outage + 1)


def test_every_retryable_status_is_retried(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    statuses = [408, 425, 429, 500, 502, 503, 504]
    assigned: dict[str, int] = {}

    def script(received: Received) -> Reply:
        # Each new event gets the next status on its first attempt, then a 200.
        if received.webhook_id not in assigned:
            assigned[received.webhook_id or ""] = statuses[len(assigned) % len(statuses)]
        return Reply(assigned[received.webhook_id or ""]) if received.attempt == 1 else Reply()

    secret = new_hmac_secret()
    server = subscriber([secret], script=script)
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", server.url, [secret], retry_schedule=[0.2, 0.2]),
            routed=["ledger"],
        )
    )
    ids = [post_event(gateway) for _ in statuses]
    wait_until(
        lambda: all_delivered(gateway, ids, "ledger"),
        what="all delivered",
    )
    assert sorted(assigned.values()) == sorted(statuses)
    for event_id in ids:
        status = assigned[event_id]
        assert len(server.for_id(event_id)) == 2, status
        rows = attempt_rows(gateway, event_id, "ledger")
        assert [(row[0], row[1]) for row in rows] == [("retry", status), ("delivered", 200)]


def test_exhausted_retries_make_a_dead_letter(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    secret = new_hmac_secret()
    server = subscriber([secret], script=always(503))
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", server.url, [secret], retry_schedule=[0.2, 0.2]),
            routed=["ledger"],
        )
    )
    event_id = post_event(gateway)
    wait_until(lambda: is_dead(gateway, event_id, "ledger"), what="dead letter")
    time.sleep(QUIET_SECONDS)  # and no fourth attempt

    requests = server.received
    assert len(requests) == 3
    assert {r.webhook_id for r in requests} == {event_id}
    assert_gaps_at_least(requests, [0.2, 0.2])
    rows = attempt_rows(gateway, event_id, "ledger")
    assert [row[1] for row in rows] == [503] * 3
    assert [row[0] for row in rows][:2] == ["retry", "retry"]
    assert rows[2][0] in ("retry", "failed")  # the spec does not say which the last one is
    assert delivery(gateway, event_id, "ledger") == ("dead", 3)

    (line,) = dead_letters(gateway)
    assert line[:3] == [event_id, "ledger", "3"]
    assert "503" in line[4]
    (letter,) = dead_letters_json(gateway)
    assert letter["event_id"] == event_id
    assert letter["subscriber"] == "ledger"
    assert letter["attempts"] == 3
    assert "503" in str(letter["last_error"])
    dead_at = datetime.fromisoformat(str(letter["dead_at"]))
    assert abs(dead_at - datetime.now(UTC)) < timedelta(minutes=2)
    assert line[3] == letter["dead_at"]  # the text form's time is the RFC 3339 one
    assert dead_letters(gateway, "--subscriber", "ledger") == [line]


# 3. Statuses that fail at once; redrive.


def test_client_errors_and_redirects_fail_at_once(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    target = subscriber([], script=always(200))
    statuses = [400, 401, 403, 404, 409, 422, 301, 302, 303, 307, 308]
    assigned: dict[str, int] = {}

    def script(received: Received) -> Reply:
        if received.webhook_id not in assigned:
            assigned[received.webhook_id or ""] = statuses[len(assigned) % len(statuses)]
        status = assigned[received.webhook_id or ""]
        return Reply(status, {"location": target.url} if 300 <= status < 400 else {})

    secret = new_hmac_secret()
    server = subscriber([secret], script=script)
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", server.url, [secret], retry_schedule=[0.2, 0.2]),
            routed=["ledger"],
        )
    )
    ids = [post_event(gateway) for _ in statuses]
    wait_until(lambda: all(is_dead(gateway, i, "ledger") for i in ids), what="all dead")
    time.sleep(QUIET_SECONDS)  # no retry, and no redirect followed

    assert sorted(assigned.values()) == sorted(statuses)
    assert target.count == 0, "a redirect was followed"
    for event_id in ids:
        assert len(server.for_id(event_id)) == 1, assigned[event_id]
        assert delivery(gateway, event_id, "ledger") == ("dead", 1)
        ((outcome, status, _, _),) = attempt_rows(gateway, event_id, "ledger")
        assert (outcome, status) == ("failed", assigned[event_id])
    listed = {line[0]: line for line in dead_letters(gateway)}
    assert set(listed) == set(ids)
    for event_id in ids:
        assert listed[event_id][1:3] == ["ledger", "1"]
        assert str(assigned[event_id]) in listed[event_id][4]


def test_a_400_is_a_dead_letter_and_redrive_delivers_it_once_fixed(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    ledger_secret, crm_secret = new_hmac_secret(), new_hmac_secret()
    ledger = subscriber([ledger_secret], script=always(400))
    crm = subscriber([crm_secret], script=always(400))
    schedule = [0.2, 0.2]
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", ledger.url, [ledger_secret], retry_schedule=schedule),
            subscriber_toml("crm", crm.url, [crm_secret], retry_schedule=schedule),
            routed=["ledger", "crm"],
        )
    )
    event_id = post_event(gateway)
    wait_until(
        lambda: is_dead(gateway, event_id, "ledger") and is_dead(gateway, event_id, "crm"),
        what="two dead letters",
    )
    assert (ledger.count, crm.count) == (1, 1)
    letters = {str(letter["subscriber"]): letter for letter in dead_letters_json(gateway)}
    assert set(letters) == {"ledger", "crm"}
    assert [line[1] for line in dead_letters(gateway, "--subscriber", "crm")] == ["crm"]
    dead_at = datetime.fromisoformat(str(letters["crm"]["dead_at"]))
    before, after = dead_at - timedelta(minutes=1), dead_at + timedelta(minutes=1)
    unix = lambda moment: str(int(moment.timestamp()))  # noqa: E731
    iso = lambda moment: moment.isoformat().replace("+00:00", "Z")  # noqa: E731

    # The subscribers are fixed.
    ledger.script = always(200)
    crm.script = always(200)

    # Windows that exclude the dead letters redrive nothing, in either spelling of T.
    assert cli_ok(gateway, "redrive", "--until", unix(before)) == "redriven: 0"
    assert cli_ok(gateway, "redrive", "--since", iso(after)) == "redriven: 0"
    assert cli_ok(gateway, "redrive", "--since", iso(before), "--until", unix(before)) == (
        "redriven: 0"
    )
    time.sleep(QUIET_SECONDS)
    assert (ledger.count, crm.count) == (1, 1)
    assert len(dead_letters(gateway)) == 2

    # One subscriber, in a window that includes its dead letter.
    assert (
        cli_ok(
            gateway,
            "redrive",
            "--subscriber",
            "crm",
            "--since",
            unix(before),
            "--until",
            iso(after),
        )
        == "redriven: 1"
    )
    crm.wait_for_count(2, SOON)
    wait_until(lambda: delivery(gateway, event_id, "crm")[0] == "delivered", what="crm delivered")
    assert ledger.count == 1
    assert [line[:2] for line in dead_letters(gateway)] == [[event_id, "ledger"]]
    request = crm.received[-1]
    assert request.webhook_id == event_id
    assert request.fully_verified
    assert request.body == stored_body(gateway, event_id)

    # The rest.
    assert cli_ok(gateway, "redrive") == "redriven: 1"
    ledger.wait_for_count(2, SOON)
    wait_until(
        lambda: delivery(gateway, event_id, "ledger")[0] == "delivered", what="ledger delivered"
    )
    assert dead_letters(gateway) == []
    assert cli_ok(gateway, "redrive") == "redriven: 0"
    time.sleep(0.3)
    assert (ledger.count, crm.count) == (2, 2)
    unknown = gateway.gateway_cli("redrive", "--subscriber", "nobody")
    assert unknown.returncode != 0


# 4. Timeouts and connection errors are retried.


def test_a_timeout_is_retried(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    secret = new_hmac_secret()
    server = subscriber([secret], script=first_attempts(1, Reply(200, delay=1.5)))
    gateway = start_gateway(
        config(
            subscriber_toml(
                "ledger", server.url, [secret], timeout_seconds=0.5, retry_schedule=[0.2, 0.2]
            ),
            routed=["ledger"],
        )
    )
    event_id = post_event(gateway)
    wait_until(lambda: delivery(gateway, event_id, "ledger")[0] == "delivered", what="delivered")
    assert len(server.for_id(event_id)) == 2
    rows = attempt_rows(gateway, event_id, "ledger")
    assert [row[0] for row in rows] == ["retry", "delivered"]
    assert rows[0][1] is None  # no status: the answer never came in time
    assert rows[0][2] == "timeout", "the timeout is recorded as the attempt's error"
    assert delivery(gateway, event_id, "ledger") == ("delivered", 2)


def test_a_closed_port_is_retried_until_a_server_listens_there(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    port = free_port()
    secret = new_hmac_secret()
    gateway = start_gateway(
        config(
            subscriber_toml(
                "ledger",
                f"http://127.0.0.1:{port}/hook",
                [secret],
                retry_schedule=[0.2, 0.3, 0.5, 0.5, 1, 1, 1, 1, 2, 2],
            ),
            routed=["ledger"],
        )
    )
    event_id = post_event(gateway)
    wait_until(lambda: len(attempt_rows(gateway, event_id, "ledger")) >= 2, what="2 attempts")
    rows = attempt_rows(gateway, event_id, "ledger")
    assert {row[0] for row in rows} == {"retry"}
    assert all(row[1] is None and row[2].startswith("connection error: ") for row in rows), rows
    assert delivery(gateway, event_id, "ledger")[0] == "pending"

    server = subscriber([secret], port=port)
    server.wait_for_count(1, SOON)
    wait_until(lambda: delivery(gateway, event_id, "ledger")[0] == "delivered", what="delivered")
    (request,) = server.received
    assert request.webhook_id == event_id
    assert request.fully_verified


# 5. 410 Gone disables the subscriber until `gateway enable`.


def test_410_makes_a_dead_letter_and_disables_the_subscriber_until_enabled(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    secret = new_hmac_secret()
    server = subscriber([secret], script=first_requests(1, Reply(410)))
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", server.url, [secret], retry_schedule=[0.2, 0.2]),
            routed=["ledger"],
        )
    )
    gone = post_event(gateway)
    wait_until(lambda: is_dead(gateway, gone, "ledger"), what="dead letter")
    assert delivery(gateway, gone, "ledger") == ("dead", 1)
    assert [line[:3] for line in dead_letters(gateway)] == [[gone, "ledger", "1"]]

    held = post_event(gateway)
    time.sleep(QUIET_SECONDS)
    assert server.count == 1, "a disabled subscriber was sent a delivery"
    assert delivery(gateway, held, "ledger") == ("pending", 0)

    assert gateway.gateway_cli("enable", "ledger").returncode == 0
    server.wait_for_count(2, SOON)
    wait_until(lambda: delivery(gateway, held, "ledger")[0] == "delivered", what="delivered")
    assert server.received[1].webhook_id == held
    time.sleep(0.3)
    assert server.count == 2, "enabling must not resend the dead letter"
    assert is_dead(gateway, gone, "ledger")
    assert gateway.gateway_cli("enable", "nobody").returncode != 0


# 6. The circuit breaker.


def test_circuit_breaker_pauses_then_probes_then_delivers_everything(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    secret = new_hmac_secret()
    # Three failures open the circuit; the first probe fails too; the second succeeds.
    server = subscriber([secret], script=first_requests(4, Reply(503)))
    gateway = start_gateway(
        config(
            subscriber_toml(
                "ledger",
                server.url,
                [secret],
                retry_schedule=[0.05] * 10,
                max_in_flight=8,
                circuit_breaker_failures=3,
                circuit_breaker_seconds=1,
            ),
            routed=["ledger"],
        )
    )
    first = post_event(gateway)
    wait_until(lambda: len(attempt_rows(gateway, first, "ledger")) >= 3, what="3 attempts")
    time.sleep(0.2)  # the circuit is saved just after the third attempt
    # While the circuit is open, more events wait: they are not hammered at the subscriber.
    others = [post_event(gateway) for _ in range(4)]
    ids = [first, *others]
    wait_until(
        lambda: all_delivered(gateway, ids, "ledger"),
        what="all delivered",
    )
    requests = server.received
    assert [r.reply.status for r in requests[:5] if r.reply] == [503] * 4 + [200]
    assert [r.webhook_id for r in requests[:3]] == [first] * 3
    # After the third failure: nothing for the pause, then one probe.
    gap = requests[3].arrived - requests[2].arrived
    assert gap >= 1.0 - EPSILON, f"the subscriber was sent a request {gap:.3f} s after opening"
    # The probe failed: the circuit re-opened, and the next probe waited again.
    gap = requests[4].arrived - requests[3].arrived
    assert gap >= 1.0 - EPSILON, f"after a failed probe, a request came {gap:.3f} s later"
    # The successful probe closed it: everything arrived, each event answered 200 once.
    ok = server.answered_ok()
    assert {i: ok[i] for i in ids} == dict.fromkeys(ids, 1)
    assert len(requests) == 4 + len(ids)


# 7. Replay.


def test_replay_resends_a_delivered_event_and_can_target_any_subscriber(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    ledger_secret, crm_secret = new_hmac_secret(), new_hmac_secret()
    ledger = subscriber([ledger_secret])
    crm = subscriber([crm_secret])
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", ledger.url, [ledger_secret]),
            subscriber_toml("crm", crm.url, [crm_secret]),
            routed=["ledger"],  # crm is configured but no route selects it
        )
    )
    event_id = post_event(gateway)
    wait_until(lambda: delivery(gateway, event_id, "ledger")[0] == "delivered", what="delivered")
    body = stored_body(gateway, event_id)

    assert cli_ok(gateway, "replay", event_id) == f"replayed {event_id} to 1 subscriber"
    ledger.wait_for_count(2, SOON)
    first, again = ledger.received
    assert again.webhook_id == first.webhook_id == event_id
    assert again.body == body
    assert again.fully_verified
    assert (again.webhook_timestamp or 0) >= (first.webhook_timestamp or 0)
    time.sleep(0.3)
    assert crm.count == 0, "replay without --subscriber went to a subscriber not routed"

    output = cli_ok(gateway, "replay", event_id, "--subscriber", "crm")
    assert output == f"replayed {event_id} to 1 subscriber"
    crm.wait_for_count(1, SOON)
    (request,) = crm.received
    assert request.webhook_id == event_id
    assert request.body == body
    assert request.fully_verified
    time.sleep(0.3)
    assert ledger.count == 2

    assert gateway.gateway_cli("replay", "evt_doesnotexist").returncode == 1
    assert gateway.gateway_cli("replay", event_id, "--subscriber", "nobody").returncode == 1


# 8. Restarts: SIGTERM and kill -9 with deliveries pending and in flight.


def test_sigterm_and_kill_9_with_deliveries_in_flight_lose_nothing(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    max_in_flight = 16
    # Slow while the events go in and the gateway is stopped and killed (16 / 0.2 s = 80 a
    # second, below what ingress takes in here, so deliveries are pending at each stop), fast
    # once it is back for good, so the test stays short.
    pace = {"delay": 0.2}
    secret = new_hmac_secret()
    server = subscriber([secret], script=lambda _: Reply(200, delay=pace["delay"]))
    gateway = start_gateway(
        config(
            subscriber_toml(
                "ledger",
                server.url,
                [secret],
                max_in_flight=max_in_flight,
                # Short, so a killed process's leases are taken up again soon; still 5 times
                # what the subscriber takes, so no attempt should time out.
                timeout_seconds=1,
                retry_schedule=[0.2, 0.5, 1, 1, 2],
            ),
            routed=["ledger"],
        )
    )
    started = time.monotonic()
    ids = post_many(gateway, 1000)
    assert len(set(ids)) == 1000
    posted = time.monotonic() - started

    gateway.stop()  # SIGTERM, deliveries pending and in flight
    pending = gateway.stats()["pending"]
    print(f"1000 posted in {posted:.1f} s; SIGTERM with {pending} pending, {server.count} sent")
    assert pending > 0, "everything was delivered before the SIGTERM: the test proves nothing"

    gateway.start()
    at_restart = server.count
    server.wait_for(
        lambda s: s.count >= at_restart + 50 and s.in_flight > 0, SOON, "deliveries in flight"
    )
    in_flight_at_kill = server.in_flight
    gateway.kill()
    pending = gateway.stats()["pending"]
    print(f"kill -9 with {pending} pending, {in_flight_at_kill} in flight at the subscriber")
    assert pending > 0, "everything was delivered before the kill: the test proves nothing"

    pace["delay"] = 0.0
    gateway.start()
    wait_until(
        lambda: set(server.answered_ok()) >= set(ids),
        timeout=45,
        what="every event at the subscriber",
    )
    wait_until(
        lambda: undelivered(gateway) == 0,
        what="every delivery recorded",
    )
    ok = server.answered_ok()
    duplicates = sum(ok[i] - 1 for i in ids)
    errors = Counter(a.error for a in all_attempts(gateway) if a.outcome != "delivered")
    print(
        f"1000 events delivered in {time.monotonic() - started:.1f} s; {duplicates} duplicates"
        f" (by webhook-id) over one SIGTERM and one kill -9; failed attempts: {errors}"
    )
    assert duplicates <= 2 * max_in_flight
    assert server.max_in_flight <= max_in_flight
    assert dead_letters(gateway) == []


def test_sigterm_lets_sends_under_way_finish_and_starts_no_new_ones(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    """The graceful path: after SIGTERM the gateway lets the sends under way finish and records
    their answers; it does not start sends that it then cuts off. So while a subscriber answers
    every request within about 10 ms, a SIGTERM costs no attempt without an answer.

    The subscriber answers 503 fast and the schedule retries fast, so the dispatcher is busy
    claiming at every moment, and the backlog does not drain between stops. Then it answers 200:
    every event still pending arrives, each exactly once."""
    state = {"reply": Reply(503, delay=0.01)}
    secret = new_hmac_secret()
    server = subscriber([secret], script=lambda _: state["reply"])
    gateway = start_gateway(
        config(
            subscriber_toml(
                "ledger",
                server.url,
                [secret],
                max_in_flight=16,
                timeout_seconds=5,
                retry_schedule=[0.3] * 20,
                circuit_breaker_failures=0,
            ),
            routed=["ledger"],
        )
    )
    ids = post_many(gateway, 100)
    unanswered: list[tuple[str | None, int]] = []
    for _ in range(5):  # the race is likely at each stop, not certain
        time.sleep(0.3)
        gateway.stop()
        attempts = all_attempts(gateway)
        unanswered = sorted(Counter(a.error for a in attempts if a.status_code is None).items())
        recorded = len(attempts)
        assert recorded == server.count, f"{server.count} requests, {recorded} attempts"
        if unanswered:
            break
        gateway.start()
    assert unanswered == [], f"SIGTERM cut sends off (the subscriber did answer): {unanswered}"

    state["reply"] = Reply(200)
    states = deliveries(gateway, ids)
    pending = [i for i in ids if states[i]["ledger"][0] == "pending"]
    assert pending, "every delivery ran out of attempts: the test proves nothing"
    wait_until(
        lambda: all_delivered(gateway, pending, "ledger"),
        what="every pending event delivered",
    )
    ok = server.answered_ok()
    assert {i: ok[i] for i in pending} == dict.fromkeys(pending, 1)


def test_after_kill_9_a_restart_sends_the_dead_process_s_leased_deliveries_at_once(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    """The default timeout (10 s) makes a lease last 35 s; the killed process's heartbeat in
    the store goes silent, and after 5 s of silence the restarted gateway gives its leases back
    and sends them: evidence that holds across hosts and PID namespaces, unlike a pid."""
    pace = {"delay": 2.0}
    secret = new_hmac_secret()
    server = subscriber([secret], script=lambda _: Reply(200, delay=pace["delay"]))
    gateway = start_gateway(
        config(subscriber_toml("ledger", server.url, [secret], max_in_flight=8), routed=["ledger"])
    )
    ids = post_many(gateway, 40)
    server.wait_for(lambda s: s.in_flight >= 8, SOON, "sends under way")
    gateway.kill()
    # SQLite only: no read of the store interface tells who holds a lease.
    leased = gateway.sqlite_query(
        "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND lease_owner IS NOT NULL"
    )
    assert leased[0][0] >= 8, "no delivery was leased at the kill: the test proves nothing"

    pace["delay"] = 0.0
    restarted = time.monotonic()
    gateway.start()
    # Well inside the 35 s the leases would otherwise hold them back (about 5 s of heartbeat
    # silence, counted from the kill). (The subscriber did get
    # the sends under way at the kill, but the gateway never heard back: they count only once
    # recorded as delivered.)
    wait_until(
        lambda: undelivered(gateway) == 0,
        timeout=15,
        what="every delivery recorded as delivered",
    )
    print(f"every delivery recorded {time.monotonic() - restarted:.1f} s after the restart")
    assert set(server.answered_ok()) >= set(ids)
    assert "leases_released" in gateway.logs_once_they_say("leases_released")


def test_a_pending_retry_survives_kill_9_and_keeps_its_schedule(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    secret = new_hmac_secret()
    server = subscriber([secret], script=first_attempts(1, Reply(503)))
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", server.url, [secret], retry_schedule=[2]),
            routed=["ledger"],
        )
    )
    event_id = post_event(gateway)
    wait_until(lambda: len(attempt_rows(gateway, event_id, "ledger")) == 1, what="1st attempt")
    gateway.kill()
    assert delivery(gateway, event_id, "ledger") == ("pending", 1)
    gateway.start()
    wait_until(lambda: delivery(gateway, event_id, "ledger")[0] == "delivered", what="delivered")
    first, second = server.received
    assert second.webhook_id == first.webhook_id == event_id
    assert_gaps_at_least([first, second], [2.0])


# 9. A slow subscriber does not slow ingress, and gets at most max_in_flight at once.


def test_a_slow_subscriber_gets_at_most_max_in_flight_and_does_not_slow_ingress(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    secret = new_hmac_secret()
    server = subscriber([secret], script=always(200, delay=1.0))
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", server.url, [secret], max_in_flight=4, timeout_seconds=10),
            routed=["ledger"],
        )
    )
    started = time.monotonic()
    ids = post_many(gateway, 300)
    received = server.count  # read first: the bound below holds at the moment elapsed is taken
    elapsed = time.monotonic() - started
    print(f"300 events accepted in {elapsed:.2f} s; the subscriber had {received} by then")
    assert len(set(ids)) == 300
    # At most 4 at a time, each taking a second: ingress did not wait for delivery.
    assert received <= 4 * (math.floor(elapsed) + 1)
    assert received < 300
    server.wait_for_count(received + 8, SOON)
    assert server.max_in_flight <= 4, f"{server.max_in_flight} requests at once"
    pending = gateway.stats()["pending"]
    assert pending > 0


# 10. Metrics.


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_attempts_dead_letters_latency_and_backlog(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    ok_secret, bad_secret, down_secret = new_hmac_secret(), new_hmac_secret(), new_hmac_secret()
    ledger = subscriber([ok_secret])
    crm = subscriber([bad_secret], script=always(400))
    closed_port = free_port()
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", ledger.url, [ok_secret]),
            subscriber_toml("crm", crm.url, [bad_secret]),
            subscriber_toml(
                "backlog",
                f"http://127.0.0.1:{closed_port}/hook",
                [down_secret],
                retry_schedule=[600],
            ),
            routed=["ledger", "crm", "backlog"],
        )
    )
    ids = [post_event(gateway) for _ in range(3)]
    wait_until(
        lambda: all(
            states["ledger"][0] == "delivered"
            and states["crm"][0] == "dead"
            and states["backlog"][1] == 1
            for states in deliveries(gateway, ids).values()
        ),
        what="delivered, dead, retrying",
    )
    response = httpx.get(f"{gateway.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    samples = _samples(response.text)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    attempts = "finrelay_delivery_attempts_total"
    assert value(attempts, subscriber="ledger", outcome="delivered") == 3
    assert value(attempts, subscriber="crm", outcome="failed") == 3
    assert value(attempts, subscriber="backlog", outcome="retry") == 3
    assert value(attempts, subscriber="ledger", outcome="failed") in (None, 0)
    assert value("finrelay_dead_letters_total", subscriber="crm") == 3
    assert value("finrelay_dead_letters_total", subscriber="ledger") in (None, 0)
    assert value("finrelay_dead_letters_total", subscriber="backlog") in (None, 0)
    assert value("finrelay_delivered_seconds_count", subscriber="ledger") == 3
    assert value("finrelay_delivered_seconds_count", subscriber="crm") in (None, 0)
    assert value("finrelay_delivered_seconds_bucket", subscriber="ledger", le="+Inf") == 3
    assert value("finrelay_delivery_queue_depth", subscriber="backlog") == 3
    assert value("finrelay_delivery_queue_depth", subscriber="ledger") == 0
    assert value("finrelay_delivery_queue_depth", subscriber="crm") == 0
    assert (value("finrelay_delivery_oldest_pending_seconds", subscriber="backlog") or 0) > 0
    assert value("finrelay_delivery_oldest_pending_seconds", subscriber="ledger") == 0


def test_delivered_seconds_counts_from_when_a_delivery_became_due_not_the_event_s_age(
    start_gateway: Callable[[str], GatewayProcess], subscriber: Callable[..., Subscriber]
) -> None:
    """A replay of an event stored a day ago is delivered in moments: it must not count as a
    day's latency. Nor does a retry count its wait: it is due when its wait is over."""
    secret = new_hmac_secret()
    server = subscriber([secret], script=first_attempts(1, Reply(503)))
    gateway = start_gateway(
        config(
            subscriber_toml("ledger", server.url, [secret], retry_schedule=[1.0]),
            routed=["ledger"],
        )
    )
    event_id = post_event(gateway)
    wait_until(lambda: delivery(gateway, event_id, "ledger")[0] == "delivered", what="delivered")
    # The event and its delivery, as if stored a day ago.
    # SQLite only: the store interface has no way to make a stored event older.
    gateway.sqlite_query("UPDATE events SET received_at = received_at - 86400")
    gateway.sqlite_query("UPDATE deliveries SET created_at = created_at - 86400")
    cli_ok(gateway, "replay", event_id)
    # Its 503 and 200 before, and the replay's one attempt, delivered.
    wait_until(lambda: delivery(gateway, event_id, "ledger") == ("delivered", 3), what="replayed")

    response = httpx.get(f"{gateway.base_url}/metrics", timeout=10)
    samples = _samples(response.text)
    count = samples[("finrelay_delivered_seconds_count", frozenset({("subscriber", "ledger")}))]
    total = samples[("finrelay_delivered_seconds_sum", frozenset({("subscriber", "ledger")}))]
    assert count == 2
    # Both in moments: the first after its 1 s retry wait, the replay at once.
    assert total < 10, f"{total:.1f} s over two deliveries"
    # And the retry was logged with its time in RFC 3339 UTC.
    line = next(
        json.loads(text)
        for text in gateway.logs_once_they_say("retry_scheduled").splitlines()
        if '"retry_scheduled"' in text
    )
    scheduled = datetime.fromisoformat(line["next_attempt_at"])
    assert line["next_attempt_at"].endswith("Z")
    assert abs(scheduled - datetime.now(UTC)) < timedelta(minutes=2)

"""What only the PostgreSQL store has to show, on a real PostgreSQL (tests/postgres_server.py):
migrations under the schema lock with several nodes opening at once, a version 1 database
migrated, a schema newer than this gateway refused, a claim's count of live leases over the
leased rows only, LISTEN/NOTIFY wake-ups from one node to another, ordered deliveries racing on
three nodes, PostgreSQL killed (StoreUnavailable within seconds, then back by itself), and the
URL's password in no error, log line or repr. (Everything the interface promises of every
backend is the contract suite's, in this folder.)"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
import pytest
import structlog

from gateway.delivery.decide import Dead, Delivered
from gateway.store import open_store
from gateway.store.base import ClaimRequest, NewEvent, StoreSchemaError, StoreUnavailable
from gateway.store.postgres import PostgresStore, glob_to_regex
from gateway.store.postgres import schema as postgres_schema
from gateway.store.postgres.queue import _LIVE_LEASES
from gateway.store.postgres.schema import SCHEMA_VERSION
from tests.postgres_server import PostgresServer
from tests.service.harness import free_port
from tests.store.support import START, Clock, claim, event, listening, settle

T = TypeVar("T")
# Every wait is bounded: a store that hangs fails the test.
WAIT_SECONDS = 15.0
# "Within a few seconds": the pool waits 3 s for a connection, libpq 5 s to connect.
UNAVAILABLE_WITHIN = 8.0


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 120))


@contextlib.asynccontextmanager
async def stores(
    url: str, count: int, clock: Callable[[], float] | None = None
) -> AsyncIterator[list[PostgresStore]]:
    """`count` stores (nodes) on one database, opened together, closed whatever happens."""
    opened = [PostgresStore(url, clock=clock) for _ in range(count)]
    try:
        await asyncio.gather(*(store.open() for store in opened))
        yield opened
    finally:
        for store in opened:
            await asyncio.wait_for(store.close(), 30)


def secrets_of(server: PostgresServer) -> list[str]:
    return [server.password, quote(server.password, safe="")]


def assert_no_secret(text: str, server: PostgresServer) -> None:
    for secret in secrets_of(server):
        assert secret not in text, "the password shows"


# Migrations.


def test_nodes_starting_together_migrate_once_and_all_open(postgres_url: str) -> None:
    async def scenario() -> None:
        nodes = [PostgresStore(postgres_url) for _ in range(6)]
        migrated = await asyncio.gather(*(node.migrate() for node in nodes))
        # One created the schema under the lock; the others waited and found it done.
        assert sorted(migrated) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 5
        async with stores(postgres_url, 6) as opened:
            assert await opened[0].accept(event(1)) == "accepted"
            for other in opened[1:]:
                assert await other.accept(event(1)) == "duplicate"

    run(scenario())


def test_a_schema_newer_than_this_gateway_is_refused(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    async def scenario() -> None:
        async with stores(postgres_url, 1):
            pass
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db:
            await db.execute("UPDATE finrelay_schema SET version = %s", (SCHEMA_VERSION + 1,))
        store = PostgresStore(postgres_url)
        with pytest.raises(StoreSchemaError) as refused:
            await store.open()
        message = str(refused.value)
        assert f"schema version {SCHEMA_VERSION + 1}" in message
        assert f"this gateway's {SCHEMA_VERSION}" in message
        assert_no_secret(message, postgres_server)
        # Refused, and left as it is: the newer gateway's schema is not touched.
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db:
            cursor = await db.execute("SELECT version FROM finrelay_schema")
            assert await cursor.fetchone() == (SCHEMA_VERSION + 1,)

    run(scenario())


def test_a_version_1_database_is_migrated_to_the_live_lease_index(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        # The database as a node of version 1 left it, a delivery of it leased.
        with monkeypatch.context() as older:
            older.setattr(postgres_schema, "MIGRATIONS", postgres_schema.MIGRATIONS[:1])
            older.setattr(postgres_schema, "SCHEMA_VERSION", 1)
            async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db:
                assert await postgres_schema.migrate(db) == (0, 1)
                await db.execute(
                    "INSERT INTO events (id, source, type, received_at, body)"
                    " VALUES ('evt_old', 's', 'payment.succeeded', %s, '{}')",
                    (START,),
                )
                await db.execute(
                    "INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at,"
                    " lease_until, lease_owner) VALUES ('evt_old', 'a', %s, %s, %s, 'old')",
                    (START, START, START + 60),
                )
        assert await PostgresStore(postgres_url).migrate() == (1, SCHEMA_VERSION)
        async with stores(postgres_url, 1, Clock(START + 1)) as (store,):
            await store.accept(event(1))
            # The old node's lease is live: it holds the one slot.
            full = await store.claim_due(
                ClaimRequest(subscriber="a", limit=10, max_in_flight=1, lease_seconds=30, owner="w")
            )
            assert (full.deliveries, full.full) == ((), True)
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db:
            cursor = await db.execute(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'deliveries_leased'"
            )
            assert await cursor.fetchone() is not None

    run(scenario())


# Claims.


def test_a_claim_counts_live_leases_over_the_leased_rows_only(postgres_url: str) -> None:
    """With a long backlog pending, counting a subscriber's live leases (for `max_in_flight`)
    reads `deliveries_leased`, which holds its leased rows only, not the pending ones."""

    async def scenario() -> None:
        async with stores(postgres_url, 1):
            pass
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as db:
            await db.execute(
                "INSERT INTO events (id, source, type, received_at, body)"
                " SELECT 'evt_' || n, 's', 'payment.succeeded', %s, '{}'"
                " FROM generate_series(1, 100000) AS n",
                (START,),
            )
            await db.execute(
                "INSERT INTO deliveries (event_id, subscriber, created_at, next_attempt_at,"
                " lease_until, lease_owner) SELECT 'evt_' || n, 'a', %s, %s,"
                " CASE WHEN n <= 10 THEN %s END, CASE WHEN n <= 10 THEN 'w' END"
                " FROM generate_series(1, 100000) AS n",
                (START, START, START + 60),
            )
            await db.execute("ANALYZE deliveries")
            # "Now" given (a test's clock) and the server's own.
            for now in (START + 1, None):
                cursor = await db.execute(
                    "EXPLAIN " + _LIVE_LEASES, {"subscriber": "a", "now": now}
                )
                plan = "\n".join(str(row[0]) for row in await cursor.fetchall())
                assert "Index Only Scan using deliveries_leased" in plan, plan
                assert "deliveries_pending" not in plan, plan

    run(scenario())


# Wake-ups.


def test_a_commit_on_one_node_wakes_the_dispatcher_of_another(postgres_url: str) -> None:
    async def scenario() -> None:
        async with stores(postgres_url, 2) as (sender, receiver):
            woken = asyncio.Event()
            receiver.watch_new_deliveries(woken.set)
            await listening(postgres_url, 1)
            # Nothing made pending: no wake-up (a duplicate, an event for nobody).
            assert await sender.accept(event(1, ())) == "accepted"
            await asyncio.sleep(0.5)
            assert not woken.is_set()
            # Another node's ingest.
            assert await sender.accept(event(2)) == "accepted"
            await asyncio.wait_for(woken.wait(), WAIT_SECONDS)
            # Another node's redrive of a dead letter.
            woken.clear()
            (claimed,) = await claim(sender)
            await settle(sender, claimed, Dead())
            await asyncio.sleep(0.5)
            assert not woken.is_set(), "a dead letter made nothing due"
            assert await sender.redrive(now=time.time()) == 1
            await asyncio.wait_for(woken.wait(), WAIT_SECONDS)

    run(scenario())


# Ordering across nodes.


def test_ordered_deliveries_racing_on_three_nodes_go_out_one_at_a_time(postgres_url: str) -> None:
    """Each node's batch asks "is a delivery of this subject pending?" while the others
    commit theirs: without the key locks two of them would both answer no."""
    clock = Clock(START + 1)

    def ordered(n: int) -> NewEvent:
        return event(n, ("a",), subject="pay_1", ordered=("a",))

    async def scenario() -> None:
        async with stores(postgres_url, 3, clock) as nodes:
            outcomes = await asyncio.gather(*(nodes[n % 3].accept(ordered(n)) for n in range(120)))
            assert outcomes == ["accepted"] * 120
            backlog = (await nodes[0].delivery_backlog())["a"]
            assert (backlog.count, backlog.held) == (120, 119)
            # Settling the one pending releases the next while the nodes take more.
            for round_ in range(5):
                (first,) = await claim(nodes[round_ % 3])
                more = range(1000 + 30 * round_, 1030 + 30 * round_)
                await asyncio.gather(
                    settle(nodes[round_ % 3], first, Delivered()),
                    *(nodes[n % 3].accept(ordered(n)) for n in more),
                )
                assert len(await claim(nodes[(round_ + 1) % 3], lease=0.0)) == 1
                clock.now += 1  # the peeking claim's lease (0 s) has run out

    run(scenario())


# PostgreSQL down.


def test_postgres_killed_makes_calls_unavailable_within_seconds_and_it_comes_back() -> None:
    server = PostgresServer()  # its own: this test kills it
    server.start()
    logged: list[str] = []

    async def scenario() -> None:
        url = server.create_database()
        async with stores(url, 1) as (store,):
            woken = asyncio.Event()
            store.watch_new_deliveries(woken.set)
            await listening(url, 1)
            assert await store.accept(event(1)) == "accepted"
            server.kill()
            calls: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
                "accept": lambda: store.accept(event(2)),
                "claim": lambda: claim(store),
                "ping": store.ping,
                "search": store.stats,
            }
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as down:
                    await asyncio.wait_for(call(), WAIT_SECONDS)
                took = time.monotonic() - started
                assert took < UNAVAILABLE_WITHIN, f"{name} took {took:.1f} s to give up"
                assert_no_secret(str(down.value), server)
            woken.clear()
            server.start()
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                try:
                    assert await store.accept(event(3)) == "accepted"
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "the store did not come back"
                    await asyncio.sleep(0.2)
            await store.ping()
            assert {n.event_id for n in await claim(store)} == {event(1).id, event(3).id}
            # The listener is back too, and says so: what came meanwhile may be due.
            await asyncio.wait_for(woken.wait(), WAIT_SECONDS)

    try:
        with structlog.testing.capture_logs() as captured:
            run(scenario())
        logged = [str(entry) for entry in captured]
    finally:
        server.shutdown()
    assert any("store_listen_lost" in line for line in logged)
    for line in logged:
        assert_no_secret(line, server)


# Secrets.


def test_the_password_is_in_no_error_and_no_repr(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    port = free_port()  # nobody listens there
    nobody = postgres_url.replace(f":{postgres_server.port}/", f":{port}/")
    wrong = postgres_url.replace(quote(postgres_server.password, safe=""), "not-it")

    async def refused(url: str) -> str:
        store = open_store(url)
        assert_no_secret(repr(store), postgres_server)
        with pytest.raises(StoreUnavailable) as error:
            await asyncio.wait_for(store.open(), WAIT_SECONDS)
        await store.close()
        return str(error.value)

    nobody_listens = run(refused(nobody))
    assert f"127.0.0.1:{port}/{database}" in nobody_listens  # where, never the URL
    assert_no_secret(nobody_listens, postgres_server)
    assert "password authentication failed" in run(refused(wrong))
    # libpq quoting the URL back: a parameter it does not know.
    with pytest.raises(ValueError, match="invalid PostgreSQL URL") as invalid:
        open_store(postgres_url + "?no_such_parameter=1")
    assert_no_secret(str(invalid.value), postgres_server)


# Event search: a shell glob, as SQLite's GLOB reads it.


@pytest.mark.parametrize(
    "glob",
    [
        "payment.*",
        "*.succeeded",
        "pay?ent.*",
        "[pt]*",
        "[^p]*",
        "a[]]b",
        "a.b",
        "x+y*",
        "(a)|b",
        "a\\b",
        "*%_*",
        "café*",
        "[a-c]x",
        "[",
        "[ab",
        "*",
    ],
)
def test_a_type_glob_matches_what_sqlite_s_glob_matches(
    postgres_server: PostgresServer, glob: str
) -> None:
    types = [
        "payment.succeeded",
        "payment.failed",
        "transfer.succeeded",
        "axb",
        "a.b",
        "a]b",
        "x+yz",
        "xxyz",
        "(a)|b",
        "a\\b",
        "50%_off",
        "café.created",
        "bx",
        "dx",
        "[",
        "",
        "pament.x",
        "payment",
    ]
    with contextlib.closing(sqlite3.connect(":memory:")) as lite:
        expected = [t for t in types if lite.execute("SELECT ? GLOB ?", (t, glob)).fetchone()[0]]
    with psycopg.connect(postgres_server.url) as db:  # no table: any database will do
        found = [
            t
            for t in types
            if db.execute("SELECT %s ~ %s", (t, glob_to_regex(glob))).fetchone() == (True,)
        ]
    assert found == expected


def test_pgpassword_from_the_environment_is_libpq_s_and_is_never_shown(
    postgres_server: PostgresServer, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_password = postgres_url.replace(":" + quote(postgres_server.password, safe=""), "")
    assert postgres_server.password not in without_password
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)

    async def scenario() -> None:
        async with stores(without_password, 1) as (store,):
            assert await store.accept(event(1)) == "accepted"
        # libpq's messages do not quote passwords today; should one ever, whether from the
        # URL or from the environment, the store blots it out of what it raises and logs.
        for url in (without_password, postgres_url):
            scrubbed = PostgresStore(url)._scrub(
                f"failed for {postgres_server.password} ({secrets_of(postgres_server)[1]})"
            )
            assert scrubbed == "failed for *** (***)"

    run(scenario())

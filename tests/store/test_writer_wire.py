"""The writer process's wire (gateway/store/wire.py, remote.py, writer_process.py): what only the
wire can get wrong. Every promise of the store itself holds over it too: that is the contract
suite's `sqlite-writer` parameter (tests/store/conftest.py).

Everything here is real: a real Unix socket, a real `WriterServer` on a real SQLiteStore, and,
where the writer must die, a real writer process (`run_writer_process`, spawned as `gateway
serve` spawns it) killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.delivery.decide import Dead
from gateway.store import remote as remote_module
from gateway.store import sqlite as sqlite_module
from gateway.store.base import NewEvent, StoreSchemaError, StoreUnavailable
from gateway.store.remote import RemoteStore, RemoteStoreError
from gateway.store.sqlite import SQLiteStore
from gateway.store.wire import (
    ERROR_INTERNAL,
    ERROR_NONE,
    HEADER_BYTES,
    MAX_FRAME_BYTES,
    METHODS,
    NEWS_DELIVERIES,
    WATCH,
    FrameReader,
    FrameTooLarge,
    OutCall,
    frame,
)
from gateway.store.writer_process import WriterServer, run_writer_process
from tests.store import support
from tests.store.support import claim, settle

# Every wait is bounded: a wire that hangs fails the test.
ANSWER_SECONDS = 10.0
# How soon a dead writer's waiting calls must fail (the calls' own timeout is 30 s).
PROMPT_SECONDS = 5.0
# How long a connection is watched for something that must not arrive.
QUIET_SECONDS = 0.5
START_SECONDS = 30.0

_reply_decoder = msgspec.msgpack.Decoder(tuple[int, int, str, Any])


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # Under /tmp: tmp_path can be longer than a socket's path may be (108 bytes).
    directory = tempfile.mkdtemp(prefix="wire-", dir="/tmp")
    try:
        yield Path(directory) / "writer.sock"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def served(
    database: Path, socket_path: Path, store: SQLiteStore | None = None
) -> AsyncIterator[SQLiteStore]:
    """A writer on this test's loop: the database's store, served on `socket_path`."""
    store = store or SQLiteStore(database, writer_on_loop=True)
    await store.open()
    server = WriterServer(store, socket_path)
    await server.start()
    try:
        yield store
    finally:
        await asyncio.wait_for(server.stop(), ANSWER_SECONDS)
        await asyncio.wait_for(store.close(), ANSWER_SECONDS)


@contextlib.asynccontextmanager
async def client(socket_path: Path) -> AsyncIterator[RemoteStore]:
    store = RemoteStore(socket_path)
    await asyncio.wait_for(store.open(), ANSWER_SECONDS)
    try:
        yield store
    finally:
        await asyncio.wait_for(store.close(), ANSWER_SECONDS)


@contextlib.contextmanager
def holding_writes(database: Path) -> Iterator[None]:
    """Another process's writer holds the database: every commit waits (the writers' flock)."""
    holder = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(holder)


def event(n: int, subscribers: tuple[str, ...] | None = None) -> NewEvent:
    # Each event's own subscriber: an answer given to the wrong call shows.
    return support.event(n, subscribers or (f"s{n}",), at=time.time())


class RawConnection:
    """A connection that speaks the wire by hand, as a broken or hostile client would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, socket_path: Path) -> RawConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(socket_path), ANSWER_SECONDS
        )
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def call(self, call_id: int, method: str, *args: Any) -> None:
        self.writer.write(frame(OutCall(call_id, method, args)))

    async def reply(self, seconds: float = ANSWER_SECONDS) -> tuple[int, int, str, Any] | None:
        """The next frame from the writer, None when it closed the connection."""
        try:
            async with asyncio.timeout(seconds):
                header = await self.reader.readexactly(HEADER_BYTES)
                body = await self.reader.readexactly(int.from_bytes(header, "big"))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return _reply_decoder.decode(body)

    async def silent_for(self, seconds: float) -> bool:
        """Whether nothing at all arrives on this connection for `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                await self.reader.read(1)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# Group commit across connections, and every answer to its own call.


def test_a_thousand_concurrent_accepts_from_three_clients_share_commits(
    tmp_path: Path, socket_path: Path
) -> None:
    database = tmp_path / "gateway.db"
    commits: list[int] = []
    # 1,000 calls over 600 events: 400 of them are sent twice, by different clients.
    calls = [(i % 3, i % 600) for i in range(1000)]

    async def scenario() -> None:
        async with served(database, socket_path) as writer_store:
            writer_store.watch_commits(commits.append)
            async with client(socket_path) as a, client(socket_path) as b, client(socket_path) as c:
                clients = (a, b, c)
                outcomes = await asyncio.wait_for(
                    asyncio.gather(*(clients[k].accept(event(n)) for k, n in calls)),
                    ANSWER_SECONDS * 3,
                )
                by_event: dict[int, list[str]] = {}
                for (_, n), outcome in zip(calls, outcomes, strict=True):
                    by_event.setdefault(n, []).append(outcome)
                for n, seen in by_event.items():
                    assert sorted(seen) == ["accepted", *["duplicate"] * (len(seen) - 1)], n
                assert (await a.stats())["events"] == 600
                # Answers that cross on the wire would give one event another's subscribers.
                subscribers = await asyncio.wait_for(
                    asyncio.gather(
                        *(clients[k].event_subscribers(support.event_id(n)) for k, n in calls)
                    ),
                    ANSWER_SECONDS * 3,
                )
                assert [list(s) for s in subscribers] == [[f"s{n}"] for _, n in calls]

    asyncio.run(scenario())
    assert sum(commits) >= 600
    # The calls of all three connections met in the writer's batches: far fewer commits than
    # calls (a handful here; one call of each connection at a time would take over 300).
    assert len(commits) <= 100, f"1,000 concurrent accepts took {len(commits)} commits"


def test_a_batch_waiting_for_another_process_s_write_lock_leaves_the_writer_answering(
    tmp_path: Path, socket_path: Path
) -> None:
    """The writer process runs its batches on its event loop (no thread to hand them to). A
    batch that must wait for another process's write (the CLI's) waits off the loop: reads and
    pings are still answered meanwhile, and the batch commits once the lock is let go."""
    database = tmp_path / "gateway.db"
    held_seconds = 3.0

    async def scenario() -> None:
        async with served(database, socket_path), client(socket_path) as store:
            assert await asyncio.wait_for(store.accept(event(1)), ANSWER_SECONDS) == "accepted"
            holder = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(holder, fcntl.LOCK_EX)
            # Let go from a thread: were the writer's loop (this test's loop) stuck on the
            # lock, nothing on it could.
            threading.Timer(held_seconds, os.close, (holder,)).start()
            held_at = time.monotonic()
            waiting = asyncio.ensure_future(store.accept(event(2)))
            await asyncio.sleep(0.3)
            assert await asyncio.wait_for(store.event_record(event(1).id), ANSWER_SECONDS)
            await asyncio.wait_for(store.ping(), ANSWER_SECONDS)
            assert not waiting.done()  # its batch still waits for the lock
            assert time.monotonic() - held_at < held_seconds / 2
            assert await asyncio.wait_for(waiting, ANSWER_SECONDS) == "accepted"

    asyncio.run(scenario())


# Frames out of a byte stream, however it is cut (both ends parse with FrameReader).


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=7000), max_size=30),
)
def test_frames_come_out_whole_and_in_order_however_the_reads_cut_them(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(len(p).to_bytes(HEADER_BYTES, "big") + p for p in payloads)
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    reader = FrameReader()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += reader.feed(stream[start:end])
    assert out == payloads


def test_a_frame_announced_past_the_bound_is_refused_before_its_body() -> None:
    reader = FrameReader()
    header = (MAX_FRAME_BYTES + 1).to_bytes(HEADER_BYTES, "big")
    assert len(reader.feed(frame(OutCall(1, "ping", ())) + header[:2])) == 1
    with pytest.raises(FrameTooLarge):
        reader.feed(header[2:])


def test_a_large_frame_in_many_small_reads_is_gathered_not_parsed_again_at_each() -> None:
    payload = os.urandom(8 << 20)
    stream = len(payload).to_bytes(HEADER_BYTES, "big") + payload
    reader = FrameReader()
    started = time.process_time()
    out: list[bytes] = []
    for start in range(0, len(stream), 1024):
        out += reader.feed(stream[start : start + 1024])
    assert out == [payload]
    # Copying what was gathered at each of the 8,193 reads would move about 32 GB.
    assert time.process_time() - started < 2.0


def test_a_writer_that_never_answers_fails_the_call_after_its_bound(
    socket_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that takes calls and answers none (stuck, not dead: the connection stays open)
    fails each call after CALL_TIMEOUT_SECONDS, and the calls of a live writer are not
    failed meanwhile."""
    monkeypatch.setattr(remote_module, "CALL_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(remote_module, "SWEEP_SECONDS", 0.1)

    async def scenario() -> None:
        heard = asyncio.Event()

        async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            heard.set()
            await reader.read()  # until the client hangs up; never a reply

        server = await asyncio.start_unix_server(deaf, socket_path)
        try:
            async with client(socket_path) as store:
                asked_at = time.monotonic()
                with pytest.raises(StoreUnavailable, match="did not answer within"):
                    await asyncio.wait_for(store.ping(), ANSWER_SECONDS)
                assert heard.is_set()
                assert 0.5 <= time.monotonic() - asked_at < 0.5 + PROMPT_SECONDS
        finally:
            server.close()

    asyncio.run(scenario())


# The writer process killed: nothing waits forever, the client reconnects, nothing acked is lost.


def start_writer_process(database: Path, socket_path: Path) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(
        target=run_writer_process,
        args=(f"sqlite:///{database}", str(socket_path), os.getpid()),
        name="test-writer",
    )
    process.start()
    return process


def stop_writer_process(process: multiprocessing.process.BaseProcess) -> None:
    if process.is_alive():
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
    process.join(ANSWER_SECONDS)


async def wait_until_serving(socket_path: Path) -> None:
    """Until a writer listens on `socket_path` (the killed writer's socket file refuses
    connections until the next writer replaces it)."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            connection = await RawConnection.open(socket_path)
            await connection.close()
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no writer came up")


def test_a_killed_writer_fails_every_waiting_call_at_once_and_a_new_one_is_reconnected_to(
    tmp_path: Path, socket_path: Path
) -> None:
    database = tmp_path / "gateway.db"
    first = start_writer_process(database, socket_path)
    second: multiprocessing.process.BaseProcess | None = None

    async def scenario() -> None:
        nonlocal second
        async with client(socket_path) as store:
            assert await asyncio.wait_for(store.accept(event(1)), ANSWER_SECONDS) == "accepted"
            with holding_writes(database):
                waiting = [asyncio.ensure_future(store.accept(event(n))) for n in range(2, 52)]
                await asyncio.sleep(0.5)  # in the writer, waiting for the database
                assert not any(call.done() for call in waiting)
                assert first.pid is not None
                os.kill(first.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                done, pending = await asyncio.wait(waiting, timeout=PROMPT_SECONDS)
                assert not pending, f"{len(pending)} calls still wait on a dead writer"
                for call in done:
                    assert isinstance(call.exception(), StoreUnavailable)
                assert time.monotonic() - killed_at < PROMPT_SECONDS
                # While no writer is there, a call fails at once too.
                with pytest.raises(StoreUnavailable):
                    await asyncio.wait_for(store.ping(), PROMPT_SECONDS)
            second = start_writer_process(database, socket_path)
            await wait_until_serving(socket_path)
            # The same client, its next call: connected again.
            assert await asyncio.wait_for(store.accept(event(100)), ANSWER_SECONDS) == "accepted"
            # What was answered "accepted" before the kill is on disk.
            assert await store.event_record(event(1).id) is not None
            assert await store.accept(event(1)) == "duplicate"

    try:
        asyncio.run(scenario())
    finally:
        stop_writer_process(first)
        if second is not None:
            stop_writer_process(second)


# News: the writer tells the connections that asked when deliveries may have become due.


def test_a_watching_client_hears_of_another_client_s_accept_redrive_and_replay(
    tmp_path: Path, socket_path: Path
) -> None:
    database = tmp_path / "gateway.db"
    clock = support.Clock()

    async def scenario() -> None:
        heard = asyncio.Event()
        async with served(
            database, socket_path, SQLiteStore(database, clock=clock, writer_on_loop=True)
        ):
            watching = RemoteStore(socket_path)
            watching.watch_new_deliveries(heard.set)
            async with client(socket_path) as other:
                await asyncio.wait_for(watching.open(), ANSWER_SECONDS)
                try:
                    await watching.ping()  # its first call asks the writer for news
                    deaf = await RawConnection.open(socket_path)
                    deaf.call(1, "ping")
                    assert await deaf.reply() == (1, ERROR_NONE, "", None)
                    heard.clear()

                    async def hears(what: str) -> None:
                        try:
                            await asyncio.wait_for(heard.wait(), ANSWER_SECONDS)
                        except TimeoutError:
                            pytest.fail(f"no news of another client's {what}")
                        heard.clear()

                    assert await other.accept(support.event(1)) == "accepted"
                    await hears("accept")
                    (claimed,) = await claim(other)
                    await settle(other, claimed, Dead())
                    heard.clear()
                    assert await other.redrive(now=clock.now) == 1
                    await hears("redrive")
                    (claimed,) = await claim(other)
                    await settle(other, claimed, Dead())
                    heard.clear()
                    assert await other.replay(support.event_id(1), ["a"], now=clock.now) == 1
                    await hears("replay")
                    # The connection that never asked heard none of it.
                    assert await deaf.silent_for(QUIET_SECONDS), "news reached a deaf client"
                    await deaf.close()
                finally:
                    await asyncio.wait_for(watching.close(), ANSWER_SECONDS)

    asyncio.run(scenario())


# Bad and hostile input: that connection is closed or answered an error; the others go on.


def test_a_frame_larger_than_the_bound_closes_only_its_connection(
    tmp_path: Path, socket_path: Path
) -> None:
    async def scenario() -> None:
        async with served(tmp_path / "gateway.db", socket_path), client(socket_path) as good:
            hostile = await RawConnection.open(socket_path)
            # A header claiming more than any frame may be, and nothing after it.
            hostile.send((MAX_FRAME_BYTES + 1).to_bytes(HEADER_BYTES, "big"))
            assert await hostile.reply() is None
            await hostile.close()
            assert await asyncio.wait_for(good.accept(event(1)), ANSWER_SECONDS) == "accepted"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1\xc1\xc1",  # 0xc1 is never msgpack
        msgspec.msgpack.encode("not a call"),
        msgspec.msgpack.encode([1, 2, 3]),  # a method that is not a name
        msgspec.msgpack.encode(["one", "ping", []]),  # an id that is not a number
    ],
    ids=["garbage", "not-an-array", "method-not-a-name", "id-not-a-number"],
)
def test_an_unreadable_call_closes_only_its_connection(
    tmp_path: Path, socket_path: Path, payload: bytes
) -> None:
    async def scenario() -> None:
        async with served(tmp_path / "gateway.db", socket_path), client(socket_path) as good:
            hostile = await RawConnection.open(socket_path)
            hostile.send(len(payload).to_bytes(HEADER_BYTES, "big") + payload)
            assert await hostile.reply() is None
            await hostile.close()
            assert await asyncio.wait_for(good.accept(event(1)), ANSWER_SECONDS) == "accepted"

    asyncio.run(scenario())


def test_an_unknown_method_or_wrong_arguments_are_answered_an_error_and_the_connection_goes_on(
    tmp_path: Path, socket_path: Path
) -> None:
    async def scenario() -> None:
        async with served(tmp_path / "gateway.db", socket_path), client(socket_path) as good:
            hostile = await RawConnection.open(socket_path)
            bad_calls: list[tuple[str, tuple[Any, ...]]] = [
                ("drop_everything", ()),
                ("close", ()),  # the writer's store is not the caller's to close
                ("open", ()),
                ("__init__", ()),
                ("accept", ("not an event",)),
                ("accept", ()),
                ("claim_due", ("a", "ten", 30.0, "w")),
                ("event_record", ("evt_1", "one too many")),
            ]
            for call_id, (method, args) in enumerate(bad_calls, start=1):
                hostile.call(call_id, method, *args)
            replies = {}
            for _ in bad_calls:
                reply = await hostile.reply()
                assert reply is not None, "the writer closed a connection it could answer"
                replies[reply[0]] = reply
            assert sorted(replies) == list(range(1, len(bad_calls) + 1))
            for call_id, error, detail, result in replies.values():
                assert (error, result) == (ERROR_INTERNAL, None), bad_calls[call_id - 1]
                assert detail, bad_calls[call_id - 1]
            # The same connection is still served, and so is everyone else.
            hostile.call(99, "ping")
            assert await hostile.reply() == (99, ERROR_NONE, "", None)
            await hostile.close()
            assert await asyncio.wait_for(good.accept(event(1)), ANSWER_SECONDS) == "accepted"
            await good.ping()

    asyncio.run(scenario())


# What a fuzzer throws at the writer: bytes, and frames of calls with arguments of any shape.
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
_calls = st.tuples(
    st.integers(1, 2**63 - 1),
    st.sampled_from([*sorted(METHODS), WATCH, "open", "close", ""]) | st.text(max_size=12),
    st.lists(_values, max_size=7),
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(noise=st.binary(max_size=64), calls=st.lists(_calls, max_size=4))
def test_random_frames_never_stop_the_writer_serving_others(
    fuzz_writer: Callable[[bytes, list[tuple[int, str, list[Any]]]], None],
    noise: bytes,
    calls: list[tuple[int, str, list[Any]]],
) -> None:
    fuzz_writer(noise, calls)


@pytest.fixture
def fuzz_writer(
    tmp_path: Path, socket_path: Path
) -> Iterator[Callable[[bytes, list[tuple[int, str, list[Any]]]], None]]:
    """One writer (on a loop of its own) for every example of the fuzz test."""
    runner = asyncio.Runner()
    writer = served(tmp_path / "gateway.db", socket_path)
    runner.run(writer.__aenter__())
    good = RemoteStore(socket_path)
    runner.run(good.open())

    async def example(noise: bytes, calls: list[tuple[int, str, list[Any]]]) -> None:
        # Readable calls, each answered under its own id, error or not.
        fuzzer = await RawConnection.open(socket_path)
        for call_id, method, args in calls:
            fuzzer.call(call_id, method, *args)
        answered: set[int] = set()
        replies = 0
        while replies < len(calls):
            reply = await fuzzer.reply()
            assert reply is not None, "a readable call's connection was closed"
            if reply[:3] == (0, ERROR_NONE, NEWS_DELIVERIES):
                continue  # it asked for news (WATCH), and a call of it made some
            replies += 1
            answered.add(reply[0])
        assert answered == {call_id for call_id, _, _ in calls}
        # Then noise: answered, closed or waited on, the writer serves everybody else.
        fuzzer.send(noise)
        await asyncio.sleep(0)
        await fuzzer.close()
        await asyncio.wait_for(good.ping(), ANSWER_SECONDS)
        assert (await asyncio.wait_for(good.stats(), ANSWER_SECONDS))["events"] >= 0

    try:
        yield lambda noise, calls: runner.run(example(noise, calls))
    finally:
        try:
            runner.run(good.close())
            runner.run(writer.__aexit__(None, None, None))
        finally:
            runner.close()


# The writer's store errors travel as what they are.


def test_the_writer_s_full_ingest_room_is_unavailable_to_the_client(
    tmp_path: Path, socket_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "gateway.db"
    monkeypatch.setattr(sqlite_module, "MAX_PENDING_WRITES", 5)

    async def scenario() -> None:
        async with served(database, socket_path), client(socket_path) as store:
            with holding_writes(database):
                first = asyncio.ensure_future(store.accept(event(1)))
                await asyncio.sleep(0.3)  # the writer thread took it and waits for the database
                piled = [asyncio.ensure_future(store.accept(event(n))) for n in range(2, 7)]
                await asyncio.sleep(0.3)  # in the writer's room, which is now full
                with pytest.raises(StoreUnavailable) as refused:
                    await asyncio.wait_for(store.accept(event(99)), ANSWER_SECONDS)
                # The store's own refusal, not a failure of the wire or of the writer.
                assert type(refused.value) is StoreUnavailable
                assert "connection" not in str(refused.value)
            outcomes = await asyncio.wait_for(asyncio.gather(first, *piled), ANSWER_SECONDS)
            assert outcomes == ["accepted"] * 6
            assert await store.event_record(event(99).id) is None

    asyncio.run(scenario())


class _SchemaRefusingStore(SQLiteStore):
    """A real SQLite store whose `ping` finds a schema it cannot use. SQLiteStore raises
    StoreSchemaError only from `open` (which never travels: the writer process exits
    EXIT_REFUSED instead), so the one method is made to raise it here."""

    async def ping(self) -> None:
        raise StoreSchemaError("the database's schema is version 99; this gateway knows 4")


def test_a_schema_error_travels_as_a_schema_error_and_a_writer_bug_as_unavailable(
    tmp_path: Path, socket_path: Path
) -> None:
    database = tmp_path / "gateway.db"

    async def scenario() -> None:
        async with (
            served(database, socket_path, _SchemaRefusingStore(database)),
            client(socket_path) as store,
        ):
            with pytest.raises(StoreSchemaError, match="version 99"):
                await asyncio.wait_for(store.ping(), ANSWER_SECONDS)
            # Arguments the writer cannot read: its bug or ours, an error for this call only.
            broken = msgspec.structs.replace(event(1), subscribers=None)  # type: ignore[arg-type]
            with pytest.raises(RemoteStoreError):
                await asyncio.wait_for(store.accept(broken), ANSWER_SECONDS)
            assert await asyncio.wait_for(store.accept(event(2)), ANSWER_SECONDS) == "accepted"

    asyncio.run(scenario())

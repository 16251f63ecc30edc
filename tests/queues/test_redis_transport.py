"""The Redis Streams transport (gateway/delivery/redis_streams.py) in this process, against a
Redis whose every reply the test writes: the XADD of each message exactly as
docs/reference/queues.md says, each entry's outcome from its own reply in order, an entry answered
before the connection was lost still delivered, and a pipeline cut by the dispatcher's deadline
leaving nothing behind on the next connection. What a real redis-server does with them is
tests/queues/test_redis.py's and test_batches.py's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import hiredis
import pytest

from gateway.delivery.redis_streams import RedisStreamsTransport
from gateway.delivery.settings.redis_streams import RedisSubscriber
from gateway.delivery.transport import OutboundMessage, SendResult
from tests.delivery.batching import subscribers_of

BODY = b'{"specversion":"1.0","id":"evt_1","data":{"note":"caf\xc3\xa9"}}'


@dataclass(frozen=True)
class Late:
    """A reply written `seconds` after its XADD came."""

    reply: bytes
    seconds: float


# What the scripted Redis answers the n-th XADD (over every connection, from 0): the reply's
# RESP bytes, now or `Late`, or None to close the connection there.
Script = Callable[[int], bytes | Late | None]


class ScriptedRedis:
    """A Redis on a free loopback port that answers "+OK" to anything but XADD (redis-py's
    handshake), and each XADD as `script` says; it keeps every XADD's arguments and counts its
    connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.xadds: list[list[bytes]] = []
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65_536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    if command[0].upper() != b"XADD":
                        writer.write(b"+OK\r\n")
                        continue
                    reply = self.script(len(self.xadds))
                    self.xadds.append(command)
                    if reply is None:
                        return
                    if isinstance(reply, Late):
                        asyncio.get_running_loop().call_later(
                            reply.seconds, writer.write, reply.reply
                        )
                    else:
                        writer.write(reply)
                await writer.drain()
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.asynccontextmanager
async def scripted_redis(script: Script) -> AsyncIterator[ScriptedRedis]:
    redis = ScriptedRedis(script)
    server = await asyncio.start_server(redis.handle, "127.0.0.1", 0)
    redis.port = server.sockets[0].getsockname()[1]
    try:
        yield redis
    finally:
        server.close()


def _transport(tmp_path: Path, url: str, settings: str = "") -> RedisStreamsTransport:
    config = subscribers_of(
        tmp_path, f'[subscribers.s]\nkind = "redis"\nurl = "{url}"\nstream = "s"\n{settings}'
    )["s"]
    assert isinstance(config, RedisSubscriber)
    return RedisStreamsTransport(config)


def _message(n: int, **fields: object) -> OutboundMessage:
    values: dict[str, object] = {
        "webhook_id": f"evt_{n}",
        "webhook_timestamp": 1_700_000_000 + n,
        "webhook_signature": f"v1,sig{n}=",
        "body": BODY,
        **fields,
    }
    return OutboundMessage(**values)  # type: ignore[arg-type]


def _entry_id(n: int) -> bytes:
    entry = b"1700000000000-%d" % n
    return b"$%d\r\n%s\r\n" % (len(entry), entry)


# Every entry's first fields, in this order (docs/reference/queues.md).
FIRST = [b"webhook-id", b"evt_0", b"webhook-timestamp", b"1700000000"]
FIRST += [b"content-type", b"application/cloudevents+json", b"body", BODY]
TRACED = [b"traceparent", b"00-ab-cd-01"]


@pytest.mark.parametrize(
    ("settings", "fields", "expected"),
    [
        ("", {}, [b"XADD", b"s", b"*", *FIRST, b"webhook-signature", b"v1,sig0="]),
        (
            "maxlen = 1000\n",
            {"webhook_signature": None, "traceparent": "00-ab-cd-01", "tracestate": "k=v"},
            [b"XADD", b"s", b"MAXLEN", b"~", b"1000", b"*", *FIRST, *TRACED, b"tracestate", b"k=v"],
        ),
        (
            "",
            {"traceparent": "00-ab-cd-01", "tracestate": None},
            [b"XADD", b"s", b"*", *FIRST, b"webhook-signature", b"v1,sig0=", *TRACED],
        ),
    ],
    ids=["signed", "maxlen-unsigned-traced", "traced-without-tracestate"],
)
def test_redis_xadd_carries_the_contracted_fields_and_the_event_bytes_unchanged(
    tmp_path: Path, settings: str, fields: dict[str, object], expected: list[bytes]
) -> None:
    async def scenario() -> tuple[list[SendResult], list[list[bytes]]]:
        async with scripted_redis(_entry_id) as redis:
            transport = _transport(tmp_path, redis.url, settings)
            try:
                return await transport.send_batch([_message(0, **fields)]), redis.xadds
            finally:
                await transport.close()

    results, xadds = asyncio.run(scenario())
    assert results == [SendResult(outcome="delivered")]
    assert xadds == [expected]


def test_redis_entries_have_their_own_replies_and_keep_them_when_the_connection_is_lost(
    tmp_path: Path,
) -> None:
    """Six XADDs in one pipeline: two entry ids, a refusal, an entry id, then the connection is
    closed before the last two are answered."""

    def script(n: int) -> bytes | None:
        if n == 2:
            return b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        return None if n == 4 else _entry_id(n)

    async def scenario() -> list[SendResult]:
        async with scripted_redis(script) as redis:
            transport = _transport(tmp_path, redis.url)
            try:
                return await transport.send_batch([_message(n) for n in range(6)])
            finally:
                await transport.close()

    results = asyncio.run(scenario())
    refused = (
        "Redis refused the XADD: WRONGTYPE Operation against a key holding the wrong kind of value"
    )
    lost = SendResult(outcome="retry", error="Redis unreachable: ConnectionError")
    assert results == [
        SendResult(outcome="delivered"),
        SendResult(outcome="delivered"),
        SendResult(outcome="retry", error=refused),
        SendResult(outcome="delivered"),
        lost,
        lost,
    ]


def test_redis_pipeline_cut_by_the_deadline_leaves_no_reply_for_the_next_batch(
    tmp_path: Path,
) -> None:
    """The transport sets no timeout of its own: the dispatcher's deadline (here a plain
    asyncio.timeout) cancels a pipeline Redis answers too late. The next batch goes on a fresh
    connection: the first one's late replies (errors, here) are never read as its own."""

    def script(n: int) -> bytes | Late:
        return Late(b"-ERR too late\r\n", 1.0) if n < 2 else _entry_id(n)

    async def scenario() -> tuple[list[SendResult], list[bytes], int]:
        async with scripted_redis(script) as redis:
            transport = _transport(tmp_path, redis.url)
            try:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3):
                        await transport.send_batch([_message(0), _message(1)])
                results = await transport.send_batch([_message(2), _message(3)])
                await asyncio.sleep(1.0)  # the late replies are written meanwhile
                results += await transport.send_batch([_message(4)])
                return results, [xadd[4] for xadd in redis.xadds], redis.connections
            finally:
                await transport.close()

    results, ids, connections = asyncio.run(scenario())
    assert results == [SendResult(outcome="delivered")] * 3
    assert ids == [b"evt_0", b"evt_1", b"evt_2", b"evt_3", b"evt_4"]
    assert connections == 2

"""The queue consumers of docs/reference/queues.md, run as written against real brokers and the
events a real gateway delivered: only the addresses, names and secret the page shows as
placeholders are swapped for the test broker's. A consumer a user pastes and sees fail (issue
25: NOGROUP, the consumer group was never created) fails here first."""

from __future__ import annotations

import ast
import asyncio
import textwrap
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import CodeType

import aio_pika
import nats
import redis

from tests.delivery.subscriber import new_hmac_secret
from tests.queues.brokers import NatsServer, RabbitServer, RedisServer
from tests.queues.support import (
    amqp_declare,
    nats_add_stream,
    nats_messages,
    post_events,
    queue_config,
    redis_messages,
    wait_until,
)
from tests.service.harness import GatewayProcess

QUEUES_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "queues.md"
StartGateway = Callable[[str], GatewayProcess]


def readme_block(name: str) -> str:
    """The Python code between `<!-- <name>:start -->` and `<!-- <name>:end -->` of the page."""
    text = QUEUES_PAGE.read_text()
    section = text.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]
    code = section.strip()
    assert code.startswith("```python\n"), f"{name}: not a Python block"
    assert code.endswith("\n```"), f"{name}: not one block"
    return code.removeprefix("```python\n").removesuffix("```")


def with_test_values(code: str, replacements: Mapping[str, str]) -> str:
    """The code with each placeholder replaced; each must be there, or the test would run
    something other than what the page shows."""
    for placeholder, value in replacements.items():
        assert placeholder in code, f"the page's consumer no longer contains {placeholder!r}"
        code = code.replace(placeholder, value)
    return code


def test_documented_redis_consumer_reads_and_acknowledges_what_the_gateway_delivered(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    secret = new_hmac_secret()
    stream = f"finrelay:{uuid.uuid4().hex}"
    gateway = start_gateway(
        queue_config("ledger", "redis", url=redis_server.url, stream=stream, secret=secret)
    )
    ids = post_events(gateway, 5)
    wait_until(lambda: len(redis_messages(redis_server.url, stream)) >= 5, what="5 entries")

    code = with_test_values(
        readme_block("redis-consumer"),
        {
            "redis://:password@redis.internal:6379/0": redis_server.url,
            '"finrelay:events"': repr(stream),
            "whsec_...": secret,
        },
    )
    namespace: dict[str, object] = {}
    exec(compile(code, "queues.md (redis-consumer)", "exec"), namespace)

    event = namespace["event"]
    assert isinstance(event, dict)
    assert event["id"] in ids
    assert event["type"] == "payment.succeeded"
    with redis.Redis.from_url(redis_server.url) as client:
        # Every entry was read by the group and acknowledged: none is left pending.
        assert client.xpending(stream, "ledger")["pending"] == 0
        (group,) = client.xinfo_groups(stream)
        last_id = client.xrevrange(stream, count=1)[0][0]
        assert group["last-delivered-id"] == last_id
        # A second run finds the group there (BUSYGROUP) and, nothing new having arrived,
        # waits its `block` and ends instead of timing out.
        exec(compile(code, "queues.md (redis-consumer)", "exec"), {})
        assert len(client.xinfo_groups(stream)) == 1


def test_documented_nats_consumer_reads_and_acknowledges_what_the_gateway_delivered(
    nats_server: NatsServer, start_gateway: StartGateway
) -> None:
    token = uuid.uuid4().hex[:12]
    stream, prefix = f"FINRELAY-{token}", f"finrelay-{token}"
    nats_add_stream(nats_server.url, stream, [f"{prefix}.>"])
    secret = new_hmac_secret()
    gateway = start_gateway(
        queue_config("risk", "nats", url=nats_server.url, subject=prefix + ".{type}", secret=secret)
    )
    ids = post_events(gateway, 5)
    wait_until(lambda: len(nats_messages(nats_server.url, stream)) >= 5, what="5 messages")

    code = with_test_values(
        readme_block("nats-consumer"),
        {
            "nats://finrelay:password@nats.internal:4222": nats_server.url,
            '"finrelay.>"': repr(f"{prefix}.>"),
            "whsec_...": secret,
        },
    )
    # The page's block runs "inside an async function": this one, which hands back its names.
    source = (
        "async def consume():\n"
        + textwrap.indent(code, "    ")
        + "    await nc.close()\n    return locals()\n"
    )
    namespace: dict[str, object] = {}
    exec(compile(source, "queues.md (nats-consumer)", "exec"), namespace)
    consume = namespace["consume"]
    assert callable(consume)
    names = asyncio.run(consume())

    event = names["event"]
    assert isinstance(event, dict)
    assert event["id"] in ids
    assert event["type"] == "payment.succeeded"
    consumer = asyncio.run(_consumer_info(nats_server.url, stream, "risk"))
    assert consumer == (5, 0)  # every message delivered to the durable, none left unacknowledged


async def _consumer_info(url: str, stream: str, durable: str) -> tuple[int, int]:
    """(messages delivered to the consumer, of those not yet acknowledged)."""
    client = await nats.connect(url)
    try:
        info = await client.jetstream().consumer_info(stream, durable)
        return info.delivered.stream_seq, info.num_ack_pending
    finally:
        await client.close()


def test_documented_amqp_consumer_reads_and_acknowledges_what_the_gateway_delivered(
    rabbit_server: RabbitServer, start_gateway: StartGateway
) -> None:
    """The RabbitMQ consumer runs until it is stopped, as a consumer does: the test runs it as a
    task, stops it once it has verified the last event, and then finds the queue empty, which it
    would not be had a message been left unacknowledged (closing the connection puts those
    back)."""
    token = uuid.uuid4().hex[:12]
    exchange, queue = f"finrelay-{token}", f"accounting-{token}"
    amqp_declare(rabbit_server.url, exchange, queue, binding="*.payment.*")
    secret = new_hmac_secret()
    gateway = start_gateway(
        queue_config(
            "accounting",
            "amqp",
            url=rabbit_server.url,
            exchange=exchange,
            routing_key="{source}.{type}",
            secret=secret,
        )
    )
    ids = post_events(gateway, 5)
    code = with_test_values(
        readme_block("amqp-consumer"),
        {
            "amqp://finrelay:password@rabbitmq.internal/finrelay": rabbit_server.url,
            '"accounting"': repr(queue),
            "whsec_...": secret,
        },
    )
    # The block's top-level awaits, compiled as written; its names land in `names`, so they
    # outlive the task's cancellation.
    compiled = compile(
        code, "queues.md (amqp-consumer)", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    names: dict[str, object] = {}
    asyncio.run(_consume_until(compiled, names, ids[-1]))

    event = names["event"]
    assert isinstance(event, dict)
    assert event["id"] == ids[-1]  # the queue is first in, first out
    assert event["type"] == "payment.succeeded"
    assert asyncio.run(_ready_messages(rabbit_server.url, queue)) == 0


async def _consume_until(compiled: CodeType, names: dict[str, object], last_id: str) -> None:
    consumer = asyncio.ensure_future(eval(compiled, names))
    deadline = asyncio.get_running_loop().time() + 30
    while not _has_event(names, last_id):
        assert not consumer.done(), consumer.exception() if consumer.done() else None
        assert asyncio.get_running_loop().time() < deadline, "the last event never arrived"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # its ack, the statement after the event is verified
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    connection = names["connection"]
    assert isinstance(connection, aio_pika.abc.AbstractConnection)
    await connection.close()


def _has_event(names: dict[str, object], event_id: str) -> bool:
    event = names.get("event")
    return isinstance(event, dict) and event.get("id") == event_id


async def _ready_messages(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        declared = await (await connection.channel()).declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        assert count is not None
        return count
    finally:
        await connection.close()

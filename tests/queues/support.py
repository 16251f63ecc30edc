"""What the queue tests share: a gateway config with one queue subscriber, the broker's own
client reading what arrived, and the checks a consumer would make on each message (the
`standardwebhooks` signature over the three webhook-* values and the body; the body as a
structured CloudEvent with the `cloudevents` package)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiormq
import httpx
import nats
import redis
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from pamqp.commands import Basic
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from adapters.samples import sample_body
from tests.service.harness import GatewayProcess
from tests.support import FINCHPAY_GATEWAY, TOKEN

SOON = 30.0
CONTENT_TYPE = "application/cloudevents+json"

HEADER = FINCHPAY_GATEWAY


def queue_config(name: str, kind: str, **settings: object) -> str:
    lines = [f"[subscribers.{name}]", f'kind = "{kind}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return HEADER + "\n".join(lines) + f'\n\n[[routes]]\nsubscribers = ["{name}"]\n'


@dataclass(frozen=True)
class Message:
    """One message as a consumer got it: the body and the webhook-* values (and the rest)."""

    body: bytes
    headers: Mapping[str, str]  # webhook-id, webhook-timestamp, webhook-signature, content-type
    extra: Mapping[str, object]  # what else the broker says (subject, message_id, ...)


def verify(message: Message, secret: str | None) -> dict[str, object]:
    """What a consumer does: verify the signature, then read the CloudEvent. The event."""
    if secret is not None:
        Webhook(secret).verify(message.body, dict(message.headers))
    else:
        assert "webhook-signature" not in message.headers
    headers = {"content-type": message.headers["content-type"]}
    event = from_http_event(HTTPMessage(headers=headers, body=message.body))
    assert event.get_id() == message.headers["webhook-id"]
    decoded: dict[str, object] = json.loads(message.body)
    return decoded


def post_events(gateway: GatewayProcess, n: int, provider_type: str = "COMPLETE") -> list[str]:
    """Post n new FinchPay events; each must be accepted (200). Their ids, in order."""
    ids = []
    for _ in range(n):
        body = sample_body("finchpay", provider_type, datetime.now(UTC))
        response = gateway.post("finchpay", body, params={"token": TOKEN})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "accepted"
        ids.append(str(response.json()["id"]))
    return ids


def attempts_metric(gateway: GatewayProcess, subscriber: str) -> dict[str, float]:
    """`finrelay_delivery_attempts_total` of one subscriber by outcome, from /metrics."""
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "finrelay_delivery_attempts_total"
                and sample.labels.get("subscriber") == subscriber
            ):
                counts[sample.labels["outcome"]] = sample.value
    return counts


def wait_until(predicate: Callable[[], object], timeout: float = SOON, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        time.sleep(0.1)


def delivery_states(gateway: GatewayProcess, subscriber: str) -> dict[str, str]:
    return {
        row.id: row.deliveries[subscriber]
        for row in gateway.events()
        if subscriber in row.deliveries
    }


def attempt_errors(gateway: GatewayProcess, event_id: str) -> list[tuple[str, str]]:
    record = gateway.event_record(event_id)
    assert record is not None, event_id
    attempts = sorted(
        (attempt for delivery in record.deliveries for attempt in delivery.attempts),
        key=lambda attempt: attempt.started_at,
    )
    return [(attempt.outcome, str(attempt.error)) for attempt in attempts]


def stored_body(gateway: GatewayProcess, event_id: str) -> bytes:
    record = gateway.event_record(event_id)
    assert record is not None, event_id
    return record.body


# Redis: XRANGE with redis-py.


def redis_messages(url: str, stream: str) -> list[Message]:
    with redis.Redis.from_url(url) as client:
        entries = client.xrange(stream)
    messages = []
    for entry_id, fields in entries:
        text = {key.decode(): value for key, value in fields.items()}
        headers = {key: value.decode() for key, value in text.items() if key != "body"}
        messages.append(
            Message(body=text["body"], headers=headers, extra={"entry_id": entry_id.decode()})
        )
    return messages


# NATS: a stream made with nats-py, read back message by message.


async def _nats_add_stream(url: str, name: str, subjects: list[str]) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().add_stream(name=name, subjects=subjects)
    finally:
        await client.close()


def nats_add_stream(url: str, name: str, subjects: list[str]) -> None:
    asyncio.run(_nats_add_stream(url, name, subjects))


async def _nats_messages(url: str, stream: str) -> list[Message]:
    client = await nats.connect(url)
    try:
        manager = client.jetstream()
        info = await manager.stream_info(stream)
        messages = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            raw = await manager.get_msg(stream, seq)
            assert raw.data is not None
            messages.append(
                Message(
                    body=raw.data,
                    headers=dict(raw.headers or {}),
                    extra={"subject": raw.subject, "seq": raw.seq},
                )
            )
        return messages
    finally:
        await client.close()


def nats_messages(url: str, stream: str) -> list[Message]:
    return asyncio.run(_nats_messages(url, stream))


# RabbitMQ: exchange, queue and binding declared with aiormq; messages taken with basic.get.


async def _amqp_declare(url: str, exchange: str, queue: str | None, binding: str) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        if exchange:
            await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        if queue is not None:
            await channel.queue_declare(queue, durable=True)
            if exchange:
                await channel.queue_bind(queue, exchange, routing_key=binding)
    finally:
        await connection.close()


def amqp_declare(url: str, exchange: str, queue: str | None, binding: str = "#") -> None:
    asyncio.run(_amqp_declare(url, exchange, queue, binding))


async def _amqp_messages(url: str, queue: str) -> list[Message]:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        messages = []
        for _ in range(100_000):  # bounded: a queue in a test holds far fewer
            got = await channel.basic_get(queue, no_ack=True)
            if not isinstance(got.delivery, Basic.GetOk):
                break
            properties = got.header.properties
            headers = {
                key: value.decode() if isinstance(value, bytes) else value
                for key, value in (properties.headers or {}).items()
            }
            headers["content-type"] = properties.content_type or ""
            messages.append(
                Message(
                    body=got.body,
                    headers=headers,
                    extra={
                        "routing_key": got.delivery.routing_key,
                        "exchange": got.delivery.exchange,
                        "message_id": properties.message_id,
                        "delivery_mode": properties.delivery_mode,
                        "timestamp": properties.timestamp,
                        "raw_headers": dict(properties.headers or {}),
                    },
                )
            )
        return messages
    finally:
        await connection.close()


def amqp_messages(url: str, queue: str) -> list[Message]:
    """Every message in `queue`, taken off it (so call it once the queue has them all)."""
    return asyncio.run(_amqp_messages(url, queue))


async def _amqp_count(url: str, queue: str) -> int:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()


def amqp_count(url: str, queue: str) -> int:
    return asyncio.run(_amqp_count(url, queue))

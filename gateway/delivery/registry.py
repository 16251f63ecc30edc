"""Every subscriber kind and the transport that sends to it, found by the config's `kind`, as
adapters/registry.py finds adapters by name. A new kind is one config Struct
(gateway/config.py), one transport module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.config import (
    AmqpSubscriber,
    FileSubscriber,
    HttpSubscriber,
    NatsSubscriber,
    RedisSubscriber,
    SubscriberConfig,
    SubscriberKind,
)
from gateway.delivery.transport import Transport

__all__ = ["TRANSPORTS", "build_transport"]

# Each transport's module (and its client library: httpx and aiohttp, redis, nats, aio-pika) is
# imported when a subscriber of its kind is built: a process that delivers nothing (an ingest
# worker) loads none of them, which is most of its start-up time and memory.


def _http(config: HttpSubscriber) -> Transport:
    from gateway.delivery.http import HttpTransport

    return HttpTransport(config.url, config.timeout_seconds, config.max_in_flight)


def _file(config: FileSubscriber) -> Transport:
    from gateway.delivery.file import FileTransport

    return FileTransport(config.path)


def _redis(config: RedisSubscriber) -> Transport:
    from gateway.delivery.redis_streams import RedisStreamsTransport

    return RedisStreamsTransport(config)


def _nats(config: NatsSubscriber) -> Transport:
    from gateway.delivery.nats_jetstream import NatsJetStreamTransport

    return NatsJetStreamTransport(config)


def _amqp(config: AmqpSubscriber) -> Transport:
    from gateway.delivery.amqp import AmqpTransport

    return AmqpTransport(config)


# Each factory takes its own kind's config Struct (the tagged union guarantees which).
TRANSPORTS: Mapping[SubscriberKind, Callable[[Any], Transport]] = {
    "http": _http,
    "file": _file,
    "redis": _redis,
    "nats": _nats,
    "amqp": _amqp,
}


def build_transport(subscriber: SubscriberConfig) -> Transport:
    """The transport a subscriber's `kind` names. Nothing connects yet: each transport
    connects on its first send, so a broker that is down delays only its own deliveries."""
    return TRANSPORTS[subscriber.kind](subscriber)

"""Every subscriber kind and the transport that sends to it, found by the config's `kind`, as
adapters/registry.py finds adapters by name. A new kind is one config Struct
(gateway/config.py), one transport module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.config import FileSubscriber, HttpSubscriber, SubscriberConfig, SubscriberKind
from gateway.delivery.amqp import AmqpTransport
from gateway.delivery.file import FileTransport
from gateway.delivery.http import HttpTransport
from gateway.delivery.nats_jetstream import NatsJetStreamTransport
from gateway.delivery.redis_streams import RedisStreamsTransport
from gateway.delivery.transport import Transport

__all__ = ["TRANSPORTS", "build_transport"]


def _http(config: HttpSubscriber) -> Transport:
    return HttpTransport(config.url, config.timeout_seconds, config.max_in_flight)


def _file(config: FileSubscriber) -> Transport:
    return FileTransport(config.path)


# Each factory takes its own kind's config Struct (the tagged union guarantees which).
TRANSPORTS: Mapping[SubscriberKind, Callable[[Any], Transport]] = {
    "http": _http,
    "file": _file,
    "redis": RedisStreamsTransport,
    "nats": NatsJetStreamTransport,
    "amqp": AmqpTransport,
}


def build_transport(subscriber: SubscriberConfig) -> Transport:
    """The transport a subscriber's `kind` names. Nothing connects yet: each transport
    connects on its first send, so a broker that is down delays only its own deliveries."""
    return TRANSPORTS[subscriber.kind](subscriber)

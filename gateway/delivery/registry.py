"""Every subscriber kind: its settings (what the config file says of it) and the transport that
sends to it, found by the config's `kind`, as adapters/registry.py finds adapters by name. This
is the one list of kinds: a new kind is its settings module (gateway/delivery/settings/), its
transport module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from gateway.delivery.settings import SubscriberConfig
from gateway.delivery.settings.amqp import AmqpSubscriber
from gateway.delivery.settings.file import FileSubscriber
from gateway.delivery.settings.http import HttpSubscriber
from gateway.delivery.settings.nats_jetstream import NatsSubscriber
from gateway.delivery.settings.redis_streams import RedisSubscriber
from gateway.delivery.transport import Transport

__all__ = ["KEYS", "KINDS", "TRANSPORTS", "Kind", "build_transport"]

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


class Kind(NamedTuple):
    settings: type[SubscriberConfig]
    # Takes its own kind's settings Struct (the tagged union guarantees which).
    transport: Callable[[Any], Transport]


KINDS: Mapping[str, Kind] = {
    kind.settings.kind: kind
    for kind in (
        Kind(HttpSubscriber, _http),
        Kind(FileSubscriber, _file),
        Kind(RedisSubscriber, _redis),
        Kind(NatsSubscriber, _nats),
        Kind(AmqpSubscriber, _amqp),
    )
}
# Every key a subscriber's table may have, and the kinds that take it (`stream`: redis), so
# that check-config can say "only redis subscribers have a stream".
KEYS: Mapping[str, tuple[str, ...]] = {
    key: tuple(name for name, kind in KINDS.items() if key in kind.settings.__struct_fields__)
    for kind in KINDS.values()
    for key in kind.settings.__struct_fields__
}
TRANSPORTS: Mapping[str, Callable[[Any], Transport]] = {
    name: kind.transport for name, kind in KINDS.items()
}


def build_transport(subscriber: SubscriberConfig) -> Transport:
    """The transport a subscriber's `kind` names. Nothing connects yet: each transport
    connects on its first send, so a broker that is down delays only its own deliveries."""
    return TRANSPORTS[subscriber.kind](subscriber)

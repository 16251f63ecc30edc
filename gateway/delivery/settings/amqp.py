"""`kind = "amqp"`: a confirmed publish to RabbitMQ (gateway/delivery/amqp.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, ClassVar

from gateway.broker_url import BrokerUrl
from gateway.delivery.settings import SubscriberConfig, host_url
from gateway.delivery.templates import template_problem

__all__ = ["AmqpSubscriber"]

SCHEMES = ("amqp", "amqps")
# RabbitMQ: an exchange name is up to 127 of these; a routing key up to 255 bytes.
_EXCHANGE = re.compile(r"[A-Za-z0-9_.:-]{0,127}")
_MAX_ROUTING_KEY_BYTES = 255


def amqp_url(url: BrokerUrl) -> BrokerUrl:
    host_url(url.reveal(), SCHEMES)
    return url


def amqp_routing_key(key: str) -> str:
    # `*` and `#` are binding patterns; a published routing key with one is a typo.
    problem = template_problem(key, "*#", empty_parts=True)
    if problem is None and len(key.encode()) > _MAX_ROUTING_KEY_BYTES:
        problem = f"at most {_MAX_ROUTING_KEY_BYTES} bytes"
    if problem is not None:
        raise ValueError(problem)
    return key


def amqp_exchange(name: str) -> str:
    if not _EXCHANGE.fullmatch(name):
        raise ValueError(
            'not an exchange name: up to 127 of A-Za-z0-9_.:- ("" is the default exchange)'
        )
    return name


class AmqpSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="amqp"):
    """A confirmed, mandatory, persistent publish to `exchange` ("" is the default exchange)
    with `routing_key`, a template of `{type}` and `{source}`."""

    kind: ClassVar[str] = "amqp"
    required_hints: ClassVar[Mapping[str, str]] = {
        "url": ": amqp:// or amqps://...",
        "routing_key": ' (e.g. "{type}"; "" for fanout)',
    }
    url: Annotated[BrokerUrl, amqp_url]
    routing_key: Annotated[str, amqp_routing_key]
    exchange: Annotated[str, amqp_exchange] = ""

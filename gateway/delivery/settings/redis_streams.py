"""`kind = "redis"`: XADD to a Redis stream (gateway/delivery/redis_streams.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import msgspec

from gateway.broker_url import BrokerUrl
from gateway.delivery.settings import SubscriberConfig, host_url

__all__ = ["RedisSubscriber"]

SCHEMES = ("redis", "rediss")


def redis_url(url: BrokerUrl) -> BrokerUrl:
    path = host_url(url.reveal(), SCHEMES).path
    if path not in ("", "/") and not path[1:].isdigit():
        raise ValueError("the database (the URL's path) is a number, e.g. /0")
    return url


class RedisSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="redis"):
    """XADD to a Redis stream (docs/reference/queues.md); `maxlen` trims it approximately (MAXLEN
    ~)."""

    kind: ClassVar[str] = "redis"
    required_hints: ClassVar[Mapping[str, str]] = {"url": ": redis:// or rediss://..."}
    url: Annotated[BrokerUrl, redis_url]
    stream: Annotated[str, msgspec.Meta(min_length=1)]
    # MAXLEN ~ keeps at least this many entries; 0 would empty the stream on every XADD.
    maxlen: Annotated[int, msgspec.Meta(ge=1)] | None = None

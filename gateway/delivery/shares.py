"""Several deliver processes on one host share each subscriber's `max_in_flight`.

`gateway serve` on SQLite runs `server.deliver_processes` of them (gateway/cli.py): each takes
its share of every subscriber's slots, so the subscriber still sees at most `max_in_flight`
requests at once from the host, whatever the count. A process whose share of a subscriber is
nothing (more processes than slots) does not deliver to it at all: the others do.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from gateway.config import SubscriberConfig

__all__ = ["share_of_slots"]


def share_of_slots(
    subscribers: Mapping[str, SubscriberConfig], index: int, count: int
) -> dict[str, SubscriberConfig]:
    """The subscribers process `index` of `count` delivers to, each with its share of the
    slots (the first processes take one more each when they do not divide evenly)."""
    shared = {}
    for name, subscriber in subscribers.items():
        slots = subscriber.max_in_flight // count + (index < subscriber.max_in_flight % count)
        if slots:
            shared[name] = msgspec.structs.replace(subscriber, max_in_flight=slots)
    return shared

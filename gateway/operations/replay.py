"""Replay: send a stored event again (a subscriber lost it, or was fixed)."""

from __future__ import annotations

import time

from gateway.config import GatewayConfig
from gateway.operations.errors import UnknownSubscriber
from gateway.store.base import Store

__all__ = ["replay_event"]


async def replay_event(
    store: Store, config: GatewayConfig, event_id: str, subscribers: list[str] | None
) -> int | None:
    """Send `event_id` again to `subscribers` (None: every configured subscriber it has a
    delivery for), due now with a fresh schedule; how many; None when there is no such event.
    UnknownSubscriber for a name the config does not define."""
    for name in subscribers or ():
        if name not in config.subscribers:
            raise UnknownSubscriber(name)
    if subscribers is None:
        delivered_to = await store.event_subscribers(event_id)
        subscribers = [name for name in delivered_to if name in config.subscribers]
    targets = list(dict.fromkeys(subscribers))
    return await store.replay(event_id, targets, now=time.time(), ordered=config.ordered(targets))

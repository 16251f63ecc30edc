"""Replay: send a stored event again (a subscriber lost it, or was fixed)."""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from gateway.config import GatewayConfig
from gateway.operations.errors import UnknownSubscriber
from gateway.store.base import Store
from gateway.tracing import TraceContext, Tracing, event_trace

__all__ = ["NotReplayed", "Replay", "replay", "replay_event"]


class NotReplayed(msgspec.Struct, frozen=True, kw_only=True):
    """A subscriber the event has a delivery for that a replay left alone, and why:
    `not_configured`, the config of whoever asked (a CLI's `--config`, the gateway's file) does
    not define it; the gateway that delivered the event read another config."""

    subscriber: str
    reason: Literal["not_configured"]


class Replay(msgspec.Struct, frozen=True, kw_only=True):
    """What a replay did: the subscribers it queued the event for again, due now, and those of
    its deliveries it did not."""

    replayed: tuple[str, ...]
    not_replayed: tuple[NotReplayed, ...] = ()


async def replay(
    store: Store,
    config: GatewayConfig,
    event_id: str,
    subscribers: list[str] | None,
    *,
    tracing: Tracing | None = None,
) -> Replay | None:
    """Send `event_id` again to `subscribers` (None: every subscriber it has a delivery for
    that the config defines; the others are named in `not_replayed`), due now with a fresh
    schedule; None when there is no such event. UnknownSubscriber for a name the config does
    not define. With `tracing`, the replay starts a new trace, linked to the event's, which the
    replayed deliveries' attempts belong to (docs/reference/traces.md)."""
    for name in subscribers or ():
        if name not in config.subscribers:
            raise UnknownSubscriber(name)
    skipped: list[str] = []
    if subscribers is None:
        delivered_to = await store.event_subscribers(event_id)
        subscribers = [name for name in delivered_to if name in config.subscribers]
        skipped = [name for name in delivered_to if name not in config.subscribers]
    targets = list(dict.fromkeys(subscribers))
    trace = await _replay_trace(store, tracing, event_id)
    count = await store.replay(
        event_id,
        targets,
        now=time.time(),
        ordered=config.ordered(targets),
        traceparent=None if trace is None else trace.traceparent,
        tracestate=None if trace is None else trace.tracestate,
    )
    if count is None:
        return None
    return Replay(
        replayed=tuple(targets),
        not_replayed=tuple(
            NotReplayed(subscriber=name, reason="not_configured") for name in dict.fromkeys(skipped)
        ),
    )


async def _replay_trace(
    store: Store, tracing: Tracing | None, event_id: str
) -> TraceContext | None:
    """The root of the trace a replay starts; its link to the event's trace is read from the
    stored event only when spans are exported (nothing else would see it)."""
    if tracing is None or not tracing.enabled:
        return None
    link = None
    if tracing.exporting:
        record = await store.event_record(event_id)
        link = None if record is None else event_trace(record.body)
    return tracing.new_trace("replay", link)


async def replay_event(
    store: Store,
    config: GatewayConfig,
    event_id: str,
    subscribers: list[str] | None,
    *,
    tracing: Tracing | None = None,
) -> int | None:
    """`replay`, as a count of the subscribers it queued the event for (the operator page's
    flash message says no more); None when there is no such event."""
    done = await replay(store, config, event_id, subscribers, tracing=tracing)
    return None if done is None else len(done.replayed)

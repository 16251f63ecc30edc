"""The figures of the operator page's live strip (`GET /admin/live`): how many events this
gateway has stored and deliveries it has made so far, and each subscriber's backlog.

The page turns two readings into rates (events/s in, deliveries/s out) itself: totals need no
state here, and any worker may answer either poll. The totals are the /metrics counters, added
up over every worker's files under `serve --workers N` (prometheus_client's multiprocess mode),
as /metrics itself does; the backlog is read from the store, the same for every process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import msgspec
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.config import GatewayConfig
from gateway.metrics import Metrics
from gateway.operations.subscribers import SubscriberStatus, list_subscribers
from gateway.store.base import Store

__all__ = ["LiveFigures", "live_figures"]

_STORED = "finrelay_events_stored_total"
_ATTEMPTS = "finrelay_delivery_attempts_total"


class LiveFigures(msgspec.Struct, frozen=True, kw_only=True):
    # Unix seconds of the reading: the page divides the change of the totals by its change.
    at: float
    stored: float
    delivered: float
    subscribers: list[SubscriberStatus]


async def live_figures(store: Store, config: GatewayConfig, metrics: Metrics) -> LiveFigures:
    stored = delivered = 0.0
    for family in _families(metrics):
        for sample in family.samples:
            if sample.name == _STORED:
                stored += sample.value
            elif sample.name == _ATTEMPTS and sample.labels.get("outcome") == "delivered":
                delivered += sample.value
    return LiveFigures(
        at=time.time(),
        stored=stored,
        delivered=delivered,
        subscribers=await list_subscribers(store, config),
    )


def _families(metrics: Metrics) -> Iterable[Metric]:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return metrics.registry.collect()
    registry = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry.collect()

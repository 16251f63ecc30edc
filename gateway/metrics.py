"""Prometheus metrics (`GET /metrics`), one registry per gateway so tests can run several.

Label values come from the config (source and subscriber names), never from the request: an
attacker posting to a million made-up source names must not create a million time series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

# `*_created` series double the output and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

# Ingress answers in well under a millisecond of CPU; the rest is the group commit's fsync.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 86400)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "finrelay_webhooks_received", "Webhook requests received", ["source"], registry=r
        )
        self.answered = Counter(
            "finrelay_webhooks_answered",
            "Webhook requests by outcome: accepted, duplicate, or the error code",
            ["source", "outcome"],
            registry=r,
        )
        self.stored = Counter(
            "finrelay_events_stored", "Canonical events stored", ["source"], registry=r
        )
        self.unrouted = Counter(
            "finrelay_events_unrouted", "Stored events no route selected", ["source"], registry=r
        )
        self.quarantined = Counter(
            "finrelay_payloads_quarantined", "Payloads kept in quarantine", ["source"], registry=r
        )
        self.ingress_latency = Histogram(
            "finrelay_ingress_seconds",
            "Time from request to answer",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery_attempts = Counter(
            "finrelay_delivery_attempts",
            "Delivery attempts by outcome (delivered, retry, failed)",
            ["subscriber", "outcome"],
            registry=r,
        )
        self.delivered_latency = Histogram(
            "finrelay_delivered_seconds",
            "Time from storing an event to the subscriber acknowledging it",
            ["subscriber"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "finrelay_dead_letters",
            "Deliveries that became dead letters",
            ["subscriber"],
            registry=r,
        )

        self.queue_depth = Gauge(
            "finrelay_delivery_queue_depth",
            "Pending deliveries (due or scheduled for a retry)",
            ["subscriber"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            "finrelay_delivery_oldest_pending_seconds",
            "Age of the oldest pending delivery",
            ["subscriber"],
            registry=r,
        )

    def set_backlog(
        self, subscribers: Iterable[str], backlog: Mapping[str, tuple[int, float]], now: float
    ) -> None:
        """Queue depth and oldest pending age per configured subscriber (0 when idle)."""
        for name in subscribers:
            depth, oldest = backlog.get(name, (0, now))
            self.queue_depth.labels(subscriber=name).set(depth)
            self.oldest_pending.labels(subscriber=name).set(max(0.0, now - oldest))

    def watch_store(self, write_counts: Callable[[], tuple[int, int]]) -> None:
        """Expose the store's commit and write counters (group commit: writes per commit)."""
        self.registry.register(_StoreWrites(write_counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StoreWrites(Collector):
    def __init__(self, write_counts: Callable[[], tuple[int, int]]) -> None:
        self._write_counts = write_counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        commits, writes = self._write_counts()
        yield CounterMetricFamily(
            "finrelay_store_commits", "Store transactions committed (each one fsync)", commits
        )
        yield CounterMetricFamily(
            "finrelay_store_writes", "Store writes carried by those transactions", writes
        )

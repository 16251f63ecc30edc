"""Prometheus metrics (`GET /metrics`), one registry per gateway so tests can run several.

Label values come from the config (source and subscriber names), never from the request: an
attacker posting to a million made-up source names must not create a million time series.

With `serve --workers N` every worker counts in its own process, and prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the parent before the workers start) keeps
the counts in files that whichever worker answers the scrape adds up. The backlog gauges are
not counts: they are read from the shared store at scrape time, so they are the same whoever
answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway.store.base import Backlog

__all__ = ["DeliverySeries", "Metrics"]

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
        self.log_lines_dropped = Counter(
            "finrelay_log_lines_dropped",
            "Log lines that could not be written to stdout (a full disk), so were dropped",
            registry=r,
        )

        self.store_commits = Counter(
            "finrelay_store_commits", "Store transactions committed (each one fsync)", registry=r
        )
        self.store_writes = Counter(
            "finrelay_store_writes", "Store writes carried by those transactions", registry=r
        )
        self._backlog = _Backlog()
        self.registry.register(self._backlog)
        self._deliveries: dict[str, DeliverySeries] = {}

    def delivery(self, subscriber: str) -> DeliverySeries:
        """`subscriber`'s delivery series, looked up once (`DeliverySeries`)."""
        series = self._deliveries.get(subscriber)
        if series is None:
            series = self._deliveries[subscriber] = DeliverySeries(self, subscriber)
        return series

    def set_backlog(
        self, subscribers: Iterable[str], backlog: Mapping[str, Backlog], now: float
    ) -> None:
        """Queue depth, held deliveries and oldest pending age per configured subscriber (0
        when idle)."""
        idle = Backlog(count=0, held=0, oldest_created_at=now)
        self._backlog.values = {
            name: (entry.count, entry.held, max(0.0, now - entry.oldest_created_at))
            for name in subscribers
            for entry in [backlog.get(name, idle)]
        }

    def record_commit(self, writes: int) -> None:
        """A store commit that carried `writes` writes (called from the store's writer)."""
        self.store_commits.inc()
        self.store_writes.inc(writes)

    def render(self) -> bytes:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return generate_latest(self.registry)
        # This worker's counters are in the directory with everyone else's.
        registry = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        registry.register(self._backlog)
        return generate_latest(registry)


class DeliverySeries:
    """One subscriber's attempts (per outcome), delivered latency and dead letters.

    Every attempt counts here, and prometheus_client's `labels(...)` lookup (a lock, its label
    names sorted and checked, the values made strings) costs more than the count itself: 1.4 us
    against 0.9 for the `inc` of a child in multiprocess mode, and a delivered attempt took two
    (its counting went from 6.8 to 3.4 us). So each child is looked up once, on first use: a
    series appears in /metrics when it is first counted, as before, never as a 0 nobody
    counted."""

    __slots__ = ("_attempts", "_dead_letters", "_latency", "_metrics", "_subscriber")

    def __init__(self, metrics: Metrics, subscriber: str) -> None:
        self._metrics = metrics
        self._subscriber = subscriber
        self._attempts: dict[str, Counter] = {}
        self._latency: Histogram | None = None
        self._dead_letters: Counter | None = None

    def attempt(self, outcome: Literal["delivered", "retry", "failed"]) -> None:
        child = self._attempts.get(outcome)
        if child is None:
            child = self._metrics.delivery_attempts.labels(
                subscriber=self._subscriber, outcome=outcome
            )
            self._attempts[outcome] = child
        child.inc()

    def delivered(self, seconds: float) -> None:
        """A delivery acknowledged `seconds` after it became due."""
        if self._latency is None:
            self._latency = self._metrics.delivered_latency.labels(subscriber=self._subscriber)
        self._latency.observe(seconds)

    def dead_letter(self) -> None:
        if self._dead_letters is None:
            self._dead_letters = self._metrics.dead_letters.labels(subscriber=self._subscriber)
        self._dead_letters.inc()


class _Backlog(Collector):
    """The delivery backlog as the last scrape read it from the store."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[int, int, float]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "finrelay_delivery_queue_depth",
            "Pending deliveries (due, scheduled for a retry, or held)",
            labels=["subscriber"],
        )
        held = GaugeMetricFamily(
            "finrelay_delivery_held",
            "Deliveries held back behind an earlier one of their subject (ordering = subject)",
            labels=["subscriber"],
        )
        oldest = GaugeMetricFamily(
            "finrelay_delivery_oldest_pending_seconds",
            "Age of the oldest pending delivery",
            labels=["subscriber"],
        )
        for name, (count, held_count, age) in sorted(self.values.items()):
            depth.add_metric([name], count)
            held.add_metric([name], held_count)
            oldest.add_metric([name], age)
        yield depth
        yield held
        yield oldest

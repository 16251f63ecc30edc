"""A subscriber's delivery series (gateway/metrics.py `DeliverySeries`): looked up once, they
still count each attempt on its own subscriber's and outcome's series, in the registry of the
gateway they belong to, and a series shows in /metrics only once something counted on it.
tests/queues/test_redis.py reads the same through a real scrape of two workers."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics

COUNTED = (
    "finrelay_delivery_attempts_total",
    "finrelay_dead_letters_total",
    "finrelay_delivered_seconds_count",
    "finrelay_delivered_seconds_sum",
)


def _counted(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    """Each counted sample by (name, subscriber, outcome or "")."""
    return {
        (sample.name, sample.labels["subscriber"], sample.labels.get("outcome", "")): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name in COUNTED
    }


def test_delivery_series_count_each_attempt_on_its_subscriber_and_outcome_only() -> None:
    metrics, other = Metrics(), Metrics()
    for _ in range(3):
        metrics.delivery("ledger").attempt("delivered")
        metrics.delivery("ledger").delivered(0.5)
    metrics.delivery("crm").attempt("retry")
    metrics.delivery("crm").attempt("failed")
    metrics.delivery("crm").dead_letter()
    other.delivery("ledger").attempt("retry")

    assert _counted(metrics) == {
        ("finrelay_delivery_attempts_total", "ledger", "delivered"): 3,
        ("finrelay_delivery_attempts_total", "crm", "retry"): 1,
        ("finrelay_delivery_attempts_total", "crm", "failed"): 1,
        ("finrelay_dead_letters_total", "crm", ""): 1,
        ("finrelay_delivered_seconds_count", "ledger", ""): 3,
        ("finrelay_delivered_seconds_sum", "ledger", ""): 1.5,
    }
    assert _counted(other) == {("finrelay_delivery_attempts_total", "ledger", "retry"): 1}
    assert metrics.delivery("ledger") is metrics.delivery("ledger")

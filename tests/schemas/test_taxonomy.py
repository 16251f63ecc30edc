"""`data.status` follows from the canonical type alone (docs/reference/event.md)."""

from __future__ import annotations

import pytest

from schemas.taxonomy import CANONICAL_TYPES, canonical_status


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("transfer.succeeded", "succeeded"),
        ("consent.authorized", "authorized"),
        ("account.frozen", "frozen"),
        ("account.request_approved", "request_approved"),
        ("workflow.started", "started"),
        ("workflow.step.retried", "step.retried"),  # the part after the first dot
        ("account.updated", None),
        ("account.balance_updated", None),
        ("account.credited", None),
        ("account.debited", None),
        ("card.transaction", None),
        ("workflow.step_completed", None),
        ("system.maintenance_start", None),
        ("system.anything", None),
    ],
)
def test_status_is_the_action_or_null(name: str, status: str | None) -> None:
    assert canonical_status(name) == status


@pytest.mark.parametrize(
    "name",
    [
        "finaegis.balance.low",
        "finexer.account.updated",
        "finchpay.CANCELLED",
        "account_lifecycle.CARD_ISSUED",
        "payment.unheard_of",
        "workflow.",
        "payment",
    ],
)
def test_what_is_not_a_canonical_type_has_no_status(name: str) -> None:
    assert canonical_status(name) is None


def test_every_closed_type_but_the_stateless_ones_has_its_action_as_status() -> None:
    stateless = {t for t in CANONICAL_TYPES if canonical_status(t) is None}
    assert stateless == {
        "account.updated",
        "account.balance_updated",
        "account.credited",
        "account.debited",
        "card.transaction",
    }

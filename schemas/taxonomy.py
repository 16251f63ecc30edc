"""The canonical type taxonomy: `<kind>.<action>`, one name per real-world fact.

The tables mapping each provider's names onto these live with the provider's adapter; this module
only says which names exist, so that an adapter cannot invent one by a typo.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "CANONICAL_TYPES",
    "KINDS",
    "OPEN_KINDS",
    "STATELESS_KINDS",
    "STATELESS_TYPES",
    "UNMAPPED",
    "EventKind",
    "canonical_status",
    "is_canonical_type",
    "kind_of",
]

EventKind = Literal[
    "account",
    "transfer",
    "payment",
    "card",
    "consent",
    "transaction",
    "workflow",
    "system",
    "unmapped",
]

KINDS: tuple[str, ...] = (
    "account",
    "transfer",
    "payment",
    "card",
    "consent",
    "transaction",
    "workflow",
    "system",
)

# `data.kind` of an event whose provider type no table knows: the event is still accepted, as
# `<adapter>.<provider type>`, so that a new provider type never turns into a lost webhook.
UNMAPPED: Final = "unmapped"

# Kinds whose every action is canonical as the provider spells it (FinAegis `workflow.x`,
# `system.x`): the provider owns those vocabularies and they carry no cross-provider meaning.
OPEN_KINDS: frozenset[str] = frozenset({"workflow", "system"})

CANONICAL_TYPES: frozenset[str] = frozenset(
    {
        "account.created",
        "account.updated",
        "account.balance_updated",
        "account.credited",
        "account.debited",
        "account.request_approved",
        "account.request_rejected",
        "account.frozen",
        "account.unfrozen",
        "account.closed",
        "account.connected",
        "transfer.created",
        "transfer.pending",
        "transfer.succeeded",
        "transfer.failed",
        "transfer.reversed",
        "transfer.expired",
        "payment.created",
        "payment.processing",
        "payment.succeeded",
        "payment.failed",
        "payment.refunded",
        "payment.disputed",
        "payment.expired",
        "card.created",
        "card.activated",
        "card.blocked",
        "card.transaction",
        "consent.created",
        "consent.authorized",
        "consent.declined",
        "consent.revoked",
        "transaction.created",
        "transaction.reversed",
    }
)


def is_canonical_type(name: str) -> bool:
    """Whether `name` is a canonical type (closed list, or any action of an open kind)."""
    kind, dot, action = name.partition(".")
    if not dot or not action:
        return False
    return name in CANONICAL_TYPES or kind in OPEN_KINDS


# Types that report something other than a new state of their subject (docs/reference/event.md): a
# change of its details, a new balance, money moving on it, a card payment, one step of a workflow,
# a notice from the platform. Their action is no state, so their `data.status` is null.
STATELESS_TYPES: frozenset[str] = frozenset(
    {
        "account.updated",
        "account.balance_updated",
        "account.credited",
        "account.debited",
        "card.transaction",
        "workflow.step_completed",
    }
)
STATELESS_KINDS: frozenset[str] = frozenset({"system"})


def canonical_status(name: str) -> str | None:
    """`data.status` of an event of type `name`: the same word whichever provider reported it.

    The action of a canonical type (`transfer.succeeded` -> `succeeded`, `workflow.x.y` ->
    `x.y`), or None for a type that reports no new state of its subject (STATELESS_TYPES, every
    `system.*`) and for anything not canonical (an unmapped `<adapter>.<provider type>`): the
    provider's own word is `data.provider_status`, and a consumer switching on status must not
    need to know it.
    """
    if not is_canonical_type(name):
        return None
    kind, _, action = name.partition(".")
    if kind in STATELESS_KINDS or name in STATELESS_TYPES:
        return None
    return action


def kind_of(name: str) -> EventKind:
    """The kind of a canonical type: `payment.succeeded` -> `payment`."""
    kind = name.partition(".")[0]
    if kind not in KINDS or not is_canonical_type(name):
        raise ValueError(f"not a canonical type: {name!r}")
    return kind  # type: ignore[return-value]  # checked against KINDS just above

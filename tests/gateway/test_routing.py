"""The router (gateway/routing.py): which subscribers an event goes to, from `[[routes]]`.

A route matches when its `sources` (absent: all) hold the event's source and one of its `types`
globs (absent: all) matches the canonical type; the event goes to the subscribers of every
matching route, each once, in config order.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import RouteConfig
from gateway.routing import Router


def route(
    *subscribers: str, sources: tuple[str, ...] | None = None, types: tuple[str, ...] | None = None
) -> RouteConfig:
    return RouteConfig(sources=sources, types=types, subscribers=subscribers)


def test_no_routes_send_nothing() -> None:
    assert Router([]).subscribers_for("finfusion", "payment.succeeded") == ()


def test_a_route_without_sources_or_types_takes_every_event() -> None:
    router = Router([route("audit")])
    assert router.subscribers_for("finfusion", "payment.succeeded") == ("audit",)
    assert router.subscribers_for("finchpay", "finchpay.UNKNOWN") == ("audit",)


@pytest.mark.parametrize(
    ("source", "expected"),
    [("finfusion-eu", ("ledger",)), ("finfusion-us", ("ledger",)), ("finchpay", ())],
)
def test_sources_narrow_a_route_to_the_sources_listed(
    source: str, expected: tuple[str, ...]
) -> None:
    router = Router([route("ledger", sources=("finfusion-eu", "finfusion-us"))])
    assert router.subscribers_for(source, "payment.succeeded") == expected


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        ("payment.succeeded", ("ledger",)),
        ("payment.failed", ("ledger",)),
        ("transfer.succeeded", ("ledger",)),  # the second glob
        ("transfer.failed", ()),
        ("payments.succeeded", ()),  # the glob is the whole type, not a prefix
        ("xpayment.succeeded", ()),
        ("Payment.succeeded", ()),  # types are lower-case; globs match case-sensitively
        ("account.created", ()),
    ],
)
def test_types_narrow_a_route_to_the_types_any_glob_matches(
    event_type: str, expected: tuple[str, ...]
) -> None:
    router = Router([route("ledger", types=("payment.*", "transfer.succeeded"))])
    assert router.subscribers_for("finfusion", event_type) == expected


@pytest.mark.parametrize(
    ("source", "event_type", "expected"),
    [
        ("finfusion", "payment.succeeded", ("risk",)),
        ("finfusion", "card.created", ()),  # right source, wrong type
        ("finchpay", "payment.succeeded", ()),  # right type, wrong source
        ("finchpay", "card.created", ()),
    ],
)
def test_sources_and_types_must_both_match(
    source: str, event_type: str, expected: tuple[str, ...]
) -> None:
    router = Router([route("risk", sources=("finfusion",), types=("payment.*",))])
    assert router.subscribers_for(source, event_type) == expected


def test_glob_wildcards_behave_as_fnmatch() -> None:
    router = Router(
        [
            route("any", types=("*",)),
            route("one-char", types=("card.?ctivated",)),
            route("set", types=("account.[cd]*",)),
            route("unmapped", types=("finexer.*",)),
        ]
    )
    assert router.subscribers_for("s", "card.activated") == ("any", "one-char")
    assert router.subscribers_for("s", "account.credited") == ("any", "set")
    assert router.subscribers_for("s", "account.debited") == ("any", "set")
    assert router.subscribers_for("s", "account.updated") == ("any",)
    assert router.subscribers_for("s", "finexer.account.updated") == ("any", "unmapped")


def test_overlapping_routes_send_to_each_subscriber_once_in_config_order() -> None:
    router = Router(
        [
            route("audit"),
            route("ledger", "audit", types=("payment.*",)),
            route("risk", "ledger", sources=("finfusion",), types=("payment.succeeded",)),
            route("crm", sources=("finchpay",)),
        ]
    )
    assert router.subscribers_for("finfusion", "payment.succeeded") == ("audit", "ledger", "risk")
    assert router.subscribers_for("finfusion", "payment.failed") == ("audit", "ledger")
    assert router.subscribers_for("finchpay", "payment.succeeded") == ("audit", "ledger", "crm")
    assert router.subscribers_for("finchpay", "account.created") == ("audit", "crm")
    assert router.subscribers_for("other", "account.created") == ("audit",)


def test_order_follows_the_first_route_that_names_a_subscriber() -> None:
    router = Router([route("b", "a", types=("payment.*",)), route("a", "c")])
    assert router.subscribers_for("s", "payment.created") == ("b", "a", "c")
    assert router.subscribers_for("s", "card.created") == ("a", "c")


def test_a_repeated_question_gets_the_same_answer() -> None:
    # The router caches answers per (source, type): the cache must not mix them up.
    router = Router([route("x", sources=("a",)), route("y", types=("card.*",))])
    for _ in range(3):
        assert router.subscribers_for("a", "card.created") == ("x", "y")
        assert router.subscribers_for("b", "card.created") == ("y",)
        assert router.subscribers_for("a", "payment.created") == ("x",)
        assert router.subscribers_for("b", "payment.created") == ()


# Every combination, against the rule as the module docstring states it.

SOURCES = ("finfusion", "finchpay", "lifecycle")
TYPES = ("payment.succeeded", "payment.failed", "card.created", "finexer.account.updated")
GLOBS = ("*", "payment.*", "payment.succeeded", "card.*", "*.created", "finexer.*", "nothing.*")
SUBSCRIBERS = ("audit", "ledger", "risk", "crm")


def expected_subscribers(routes: list[RouteConfig], source: str, event_type: str) -> list[str]:
    selected: list[str] = []
    for candidate in routes:
        if candidate.sources is not None and source not in candidate.sources:
            continue
        if candidate.types is not None and not any(
            fnmatchcase(event_type, glob) for glob in candidate.types
        ):
            continue
        for name in candidate.subscribers:
            if name not in selected:
                selected.append(name)
    return selected


def _subset(pool: tuple[str, ...]) -> st.SearchStrategy[tuple[str, ...] | None]:
    return st.none() | st.lists(st.sampled_from(pool), min_size=1, max_size=3).map(tuple)


routes_strategy = st.lists(
    st.builds(
        RouteConfig,
        sources=_subset(SOURCES),
        types=_subset(GLOBS),
        subscribers=st.lists(st.sampled_from(SUBSCRIBERS), min_size=1, max_size=3).map(tuple),
    ),
    max_size=5,
)


@given(routes=routes_strategy)
def test_every_event_goes_to_exactly_the_subscribers_its_routes_name(
    routes: list[RouteConfig],
) -> None:
    router = Router(routes)
    for source in SOURCES:
        for event_type in TYPES:
            chosen = router.subscribers_for(source, event_type)
            assert list(chosen) == expected_subscribers(routes, source, event_type)
            assert len(set(chosen)) == len(chosen)

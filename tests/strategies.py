"""Hypothesis strategies more than one test module draws from."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import strategies as st

__all__ = ["stripe_shaped_bodies"]


def stripe_shaped_bodies(types: Sequence[str], size: int, leaves: int) -> st.SearchStrategy[bytes]:
    """Stripe-shaped event bodies (`id`, `object`, `type`, `data.object` of arbitrary JSON),
    ASCII-escaped or not, of one of `types`; `size` bounds the nesting's breadth,
    `leaves` its scalars."""
    scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    values = st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=size)
            | st.dictionaries(st.text(max_size=8), children, max_size=size)
        ),
        max_leaves=leaves,
    )
    return st.builds(
        lambda event_id, event_type, extra, ensure_ascii: json.dumps(
            {"id": event_id, "object": "event", "type": event_type, "data": {"object": extra}},
            ensure_ascii=ensure_ascii,
        ).encode(),
        st.text(min_size=1, max_size=20),
        st.sampled_from(list(types)),
        st.dictionaries(st.text(max_size=8), values, max_size=size),
        st.booleans(),
    )

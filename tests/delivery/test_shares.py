"""Deliver processes share each subscriber's `max_in_flight` (gateway/delivery/shares.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import HttpSubscriber
from gateway.delivery.shares import share_of_slots


@given(
    slots=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=5),
    count=st.integers(min_value=1, max_value=16),
)
def test_the_shares_add_up_to_the_bound_and_differ_by_one_at_most(
    slots: list[int], count: int
) -> None:
    subscribers = {
        f"s{n}": HttpSubscriber(name=f"s{n}", url="http://127.0.0.1:9/", max_in_flight=bound)
        for n, bound in enumerate(slots)
    }
    shares = [share_of_slots(subscribers, index, count) for index in range(count)]
    for name, subscriber in subscribers.items():
        taken = [share[name].max_in_flight for share in shares if name in share]
        assert sum(taken) == subscriber.max_in_flight
        assert all(part >= 1 for part in taken)  # a process with no share does not deliver
        assert len(taken) == min(count, subscriber.max_in_flight)
        assert max(taken) - min(taken) <= 1
        for share in shares:  # everything else as configured
            if name in share:
                assert share[name].url == subscriber.url
                assert type(share[name]) is HttpSubscriber


def test_one_process_takes_every_slot() -> None:
    subscriber = HttpSubscriber(name="a", url="http://127.0.0.1:9/", max_in_flight=7)
    assert share_of_slots({"a": subscriber}, 0, 1) == {"a": subscriber}

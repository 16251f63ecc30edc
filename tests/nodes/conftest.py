"""Fixtures of the several-node tests: a verifying subscriber and clusters that are always
stopped, with their logs shown when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.delivery.subscriber import Subscriber, new_hmac_secret
from tests.nodes.cluster import Cluster


@pytest.fixture
def secret() -> str:
    return new_hmac_secret()


@pytest.fixture
def subscriber(secret: str) -> Iterator[Subscriber]:
    server = Subscriber([secret]).start()
    yield server
    server.stop()


@pytest.fixture
def start_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []

    def start(configs: Sequence[str], serve_args: Sequence[str] = ()) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(started)}", configs, serve_args)
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.stop()
        print(cluster.logs())  # shown by pytest only when the test failed

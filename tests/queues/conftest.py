"""Brokers and gateways for the queue tests. One broker of each kind per test process (xdist
worker) for the tests that only publish and read; a test that stops or kills its broker starts
its own with `own_broker`. Everything started is stopped after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.queues.brokers import BrokerProcess, NatsServer, RabbitServer, RedisServer
from tests.service.harness import GatewayProcess


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def rabbit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    server = RabbitServer(tmp_path_factory.mktemp("rabbitmq"))
    server.start()
    yield server
    server.shutdown()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def start(kind: type[BrokerProcess], **options: object) -> BrokerProcess:
        server = kind(tmp_path / f"{kind.name}{len(started)}", **options)  # type: ignore[arg-type]
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.shutdown()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[[str], GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config_text: str) -> GatewayProcess:
        workdir = tmp_path / f"gateway{len(started)}"
        workdir.mkdir()
        gateway = GatewayProcess(workdir, config_text).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
        # Shown by pytest only when the test failed.
        print(f"--- gateway log ({gateway.workdir}) ---\n" + gateway.logs()[-6000:])

"""Fixtures many test folders share: a real PostgreSQL (tests/postgres_server.py), one cluster
per test process (xdist worker), and a fresh database in it for each test that asks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.shutdown()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """libpq's URL of a new, empty database (its password percent-encoded)."""
    return postgres_server.create_database()

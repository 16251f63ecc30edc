"""The store contract suite's fixtures: every test that asks for `open_test_store` runs once per
backend (`backend`: SQLite, PostgreSQL), on one fresh database
of that backend.

`open_test_store(clock)` opens a store on the test's database: through `open_store(url)`, as
the gateway does, when the test keeps the store's own clock; through the backend's class when
it passes one (a `Clock` it moves by hand). Called twice, it gives two stores on the SAME
database: two gateway processes, or two nodes, which is how the suite shows what holds across
them. `run(coroutine)` runs a test's scenario on the event loop its stores live on, and every
store opened is closed on that loop when the test ends, whatever happened.

PostgreSQL is asked for only by the `postgresql` parameter (the suite's SQLite half starts no
cluster); its database is a new empty one per test (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar

import pytest

from gateway.store import Store, open_store
from gateway.store.sqlite import SQLiteStore

T = TypeVar("T")
BACKENDS = ("sqlite", "postgresql")
# Every close waits at most this long: a store that cannot close fails the test, never hangs it.
CLOSE_SECONDS = 30.0


class OpenStore(Protocol):
    async def __call__(
        self, clock: Callable[[], float] | None = None, *, opened: bool = True
    ) -> Store: ...


class Run(Protocol):
    def __call__(self, coroutine: Coroutine[Any, Any, T]) -> T: ...


class TestDatabase:
    """One database of one backend for one test, the stores opened on it, and their loop."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, backend: str, url: str, path: Path | None) -> None:
        self.backend = backend
        self.url = url
        self.path = path
        self.runner = asyncio.Runner()
        self.stores: list[Store] = []

    def _new_store(self, clock: Callable[[], float] | None) -> Store:
        if clock is None:
            return open_store(self.url)
        if self.backend == "sqlite":
            assert self.path is not None
            return SQLiteStore(self.path, clock=clock)
        # Imported here: PostgreSQL's module only when its parameter runs.
        from gateway.store.postgres import PostgresStore

        return PostgresStore(self.url, clock=clock)

    async def open_store(
        self, clock: Callable[[], float] | None = None, *, opened: bool = True
    ) -> Store:
        store = self._new_store(clock)
        self.stores.append(store)
        if opened:
            await store.open()
        return store

    @property
    def module(self) -> ModuleType:
        """The backend's module (its tunables, such as MAX_PENDING_WRITES, for monkeypatch)."""
        return importlib.import_module(
            "gateway.store.postgres" if self.backend == "postgresql" else "gateway.store.sqlite"
        )

    @contextlib.asynccontextmanager
    async def holding_writes(self) -> AsyncIterator[None]:
        """Another process keeps every store's ingest from committing while this is entered:
        SQLite's writers wait for their flock, PostgreSQL's inserts for a table lock."""
        if self.backend != "postgresql":
            holder = os.open(f"{self.path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(holder, fcntl.LOCK_EX)
                yield
            finally:
                os.close(holder)  # lets the lock go
            return
        import psycopg

        other = await psycopg.AsyncConnection.connect(self.url)
        async with other, other.transaction():
            # SHARE conflicts with the ROW EXCLUSIVE lock an INSERT takes; reads go on.
            await other.execute("LOCK TABLE events IN SHARE MODE")
            yield

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def close(self) -> None:
        async def close_all() -> None:
            for store in reversed(self.stores):
                await asyncio.wait_for(store.close(), CLOSE_SECONDS)

        try:
            self.runner.run(close_all())
        finally:
            self.runner.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def test_database(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[TestDatabase]:
    if backend != "postgresql":
        path = tmp_path / "gateway.db"
        database = TestDatabase(backend, f"sqlite:///{path}", path)
    else:
        url: str = request.getfixturevalue("postgres_url")
        database = TestDatabase(backend, url, None)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def open_test_store(test_database: TestDatabase) -> OpenStore:
    return test_database.open_store


@pytest.fixture
def run(test_database: TestDatabase) -> Run:
    return test_database.run

"""Durable storage behind one interface (`base.Store`); `open_store` picks the backend by URL."""

from __future__ import annotations

from collections.abc import Callable

from gateway.store.base import Store, StoreSchemaError, StoreUnavailable
from gateway.store.sqlite import SQLiteStore, sqlite_path_from_url

__all__ = ["Store", "StoreSchemaError", "StoreUnavailable", "open_store"]


def _sqlite(url: str) -> Store:
    return SQLiteStore(sqlite_path_from_url(url))


def _postgres(url: str) -> Store:
    # Imported when asked for: a gateway on SQLite never loads the PostgreSQL driver.
    from gateway.store.postgres import PostgresStore

    return PostgresStore(url)


# A `[store] url`'s scheme -> the backend that opens it.
BACKENDS: dict[str, Callable[[str], Store]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def open_store(url: str) -> Store:
    """The store a `[store] url` names (not yet opened)."""
    scheme = url.partition(":")[0]
    backend = BACKENDS.get(scheme)
    if backend is None:
        raise ValueError(f"unsupported store url scheme: {scheme}")
    return backend(url)

"""Durable storage behind one interface (`base.Store`); `open_store` picks the backend by URL."""

from __future__ import annotations

from gateway.store.base import Store, StoreSchemaError, StoreUnavailable
from gateway.store.sqlite import SQLiteStore, sqlite_path_from_url

__all__ = ["Store", "StoreSchemaError", "StoreUnavailable", "open_store"]


def open_store(url: str) -> Store:
    """The store a `[store] url` names (not yet opened)."""
    if url.startswith("sqlite:"):
        return SQLiteStore(sqlite_path_from_url(url))
    raise ValueError(f"unsupported store url scheme: {url.partition(':')[0]}")

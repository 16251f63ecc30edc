"""The SQLite store's files: who may read them, and the settings that make a commit durable.

SQLite only: its database is a file on this host (modes, umask, WAL and `synchronous`); a
server database's access and durability are the server's."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store.base import NewEvent
from gateway.store.sqlite import SQLiteStore


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The umask many systems run services with (022): what the store must not rely on."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_store_keeps_its_files_and_directories_from_other_users(
    tmp_path: Path, permissive_umask: None
) -> None:
    database = tmp_path / "var" / "finrelay" / "gateway.db"

    async def scenario() -> None:
        store = SQLiteStore(database)
        await store.open()
        try:
            # A write, so that the -wal and -shm files exist while we look.
            await store.accept(
                NewEvent(
                    id="evt_1",
                    source="s",
                    type="payment.succeeded",
                    received_at=time.time(),
                    body=b"{}",
                    subscribers=("a",),
                )
            )
            files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
            for path in files:
                assert path.exists(), path
                assert mode(path) == 0o600, f"{path.name}: {oct(mode(path))}"
        finally:
            await store.close()

    asyncio.run(scenario())
    # Every directory it made, the parents too: nothing for others.
    for directory in (tmp_path / "var", tmp_path / "var" / "finrelay"):
        assert mode(directory) & 0o007 == 0, f"{directory}: {oct(mode(directory))}"
        assert mode(directory) & 0o700 == 0o700


def test_an_existing_database_keeps_its_mode(tmp_path: Path, permissive_umask: None) -> None:
    # An operator who chose 0640 (a backup user in the group) keeps it.
    database = tmp_path / "gateway.db"
    database.touch(mode=0o640)
    database.chmod(0o640)

    async def scenario() -> None:
        store = SQLiteStore(database)
        await store.open()
        await store.close()

    asyncio.run(scenario())
    assert mode(database) == 0o640


def test_the_writer_commits_in_wal_mode_with_synchronous_full(tmp_path: Path) -> None:
    # A kill -9 test cannot tell FULL from NORMAL (both survive a process crash; only FULL
    # survives a power loss): the setting itself is what must hold.
    async def scenario() -> tuple[str, int]:
        store = SQLiteStore(tmp_path / "gateway.db")
        await store.open()
        try:
            return await store.durability()
        finally:
            await store.close()

    journal_mode, synchronous = asyncio.run(scenario())
    assert journal_mode == "wal"
    assert synchronous == 2  # FULL (NORMAL is 1)

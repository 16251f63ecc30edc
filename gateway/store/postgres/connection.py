"""Connections to PostgreSQL: the pool, bounded waits, errors turned into StoreUnavailable, and
the secrets no message may carry.

- **Bounded.** A small pool, connect, pool-wait and statement timeouts, TCP keepalives: with
  PostgreSQL down every call raises StoreUnavailable within seconds, and the pool reconnects
  by itself when it is back (a connection is checked when taken).
- **The writer's own.** The group commit (gateway/store/group_commit.py) runs in a thread on
  an event loop of its own, so its connection is outside the pool (`WriterConnection`): made
  there, checked before a batch when it idled (a restart of PostgreSQL meanwhile replaces it
  instead of failing the batch), replaced once lost.
- **Secrets.** The URL goes to libpq as it is (sslmode, percent-encoded passwords, PGPASSWORD);
  no error, log line or repr of the store carries it: they name host:port/database, and any
  password text that ever shows in a driver's message is blotted out.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.store.base import StoreUnavailable

__all__ = ["Connection", "Database", "Unreachable", "WriterConnection"]

log = structlog.get_logger("gateway.store")

Connection = psycopg.AsyncConnection[TupleRow]

# Connections per store: claims, heartbeats and operators' reads share them, and none is held
# during a send. Several nodes times this (plus the writer's and the listener's connections)
# must fit the server's max_connections.
POOL_SIZE = 10
# How long a call waits for a connection (PostgreSQL down: the pool cannot make one).
POOL_WAIT_SECONDS = 3.0
# How long one series of the pool's reconnection attempts goes on (see `open`).
RECONNECT_SECONDS = 5.0
# libpq's connect_timeout and TCP settings, unless the URL sets its own.
CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    # Sent data unacknowledged this long (ms): the server is gone, whatever TCP would wait.
    "tcp_user_timeout": "15000",
    "application_name": "finrelay",
}
# The writer's connection, idle at least this long, is checked (one round trip) before a batch:
# under load batches follow each other and pay nothing.
CHECK_AFTER_IDLE_SECONDS = 1.0
# A statement that runs longer is cancelled (a lock nobody lets go, a disk that does not
# answer): the caller gets StoreUnavailable instead of waiting. Key locks are held for one
# short transaction, so a wait this long means something is wrong.
STATEMENT_TIMEOUT = "10s"
# A node that stops in the middle of a transaction must not hold its key locks for ever.
IDLE_IN_TRANSACTION_TIMEOUT = "30s"


class Unreachable(StoreUnavailable):
    """The database cannot be reached (down, the network, no connection to be had)."""


class Database:
    """One database's pool, named for messages by host:port/database, never by its URL."""

    def __init__(self, url: str) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as error:
            # libpq's words, with whatever of the URL they quote blotted out.
            reason = " ".join(str(error).replace(url, "<url>").split())
            for secret in _secrets_of(url, {}):
                reason = reason.replace(secret, "***")
            raise ValueError(f"invalid PostgreSQL URL: {reason}") from None
        defaults = {key: value for key, value in CONNECTION_DEFAULTS.items() if key not in params}
        if "PGCONNECT_TIMEOUT" in os.environ:
            defaults.pop("connect_timeout", None)
        self._conninfo = make_conninfo(url, **defaults)
        self.where = _where(params)
        self._secrets = _secrets_of(url, params)
        self._pool: AsyncConnectionPool[Connection] | None = None

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def connect(self, *, bounded: bool = False) -> Connection:
        """A connection of its own, outside the pool, in autocommit mode (the schema lock's
        holder, the listener; `bounded`: the writer's, with the pool's time limits)."""
        connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        if bounded:
            try:
                await _configure(connection)
            except BaseException:
                await connection.close()
                raise
        return connection

    async def open(self) -> None:
        """Open the pool, waiting for its first connection (StoreUnavailable when none)."""
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=POOL_WAIT_SECONDS,
            open=False,
            kwargs={"autocommit": True},
            configure=_configure,
            # Checked when taken: after PostgreSQL restarted, a dead connection is replaced
            # instead of failing a call.
            check=AsyncConnectionPool.check_connection,
            # The pool's reconnection backoff doubles without bound: after a long outage its
            # next attempt could be minutes away. Giving up after a few seconds instead lets
            # the next call start a fresh attempt (1 s, 2 s...): back within seconds.
            reconnect_timeout=RECONNECT_SECONDS,
            name=f"finrelay-store-{self.where}",
        )
        try:
            await pool.open(wait=True, timeout=POOL_WAIT_SECONDS + 5)
        except psycopg.Error as error:
            await pool.close()
            raise self.unavailable(error) from None
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[Connection]:
        if self._pool is None:
            raise StoreUnavailable("the store is not open")
        try:
            async with self._pool.connection(timeout) as db:
                yield db
        except psycopg.Error as error:
            raise self.unavailable(error) from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as db, db.transaction():
            yield db

    def unavailable(self, error: psycopg.Error) -> StoreUnavailable:
        """The StoreUnavailable a driver error becomes: where, never the URL or password."""
        text = self.scrub(" ".join(str(error).split())) or type(error).__name__
        message = f"PostgreSQL {self.where}: {text}"
        if _unreachable(error):
            return Unreachable(message)
        # Not the connection: a statement timeout, a deadlock PostgreSQL broke, or a bug.
        log.warning("store_statement_failed", sqlstate=error.sqlstate, error=message)
        return StoreUnavailable(message)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class WriterConnection:
    """The group commit's connection, on the writer thread's event loop (never another's):
    made when first needed, checked when it idled, replaced once lost. `session()` hands it
    out, driver errors turned into StoreUnavailable."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection: Connection | None = None
        self._used_at = 0.0

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Connection]:
        try:
            yield await self._usable()
        except psycopg.Error as error:
            raise self._database.unavailable(error) from None
        finally:
            self._used_at = time.monotonic()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                await connection.close()

    async def _usable(self) -> Connection:
        connection = self._connection
        if connection is not None and (connection.closed or connection.broken):
            await self.close()
        elif connection is not None and (
            time.monotonic() - self._used_at > CHECK_AFTER_IDLE_SECONDS
        ):
            try:
                await connection.execute("")
            except psycopg.Error:
                await self.close()
        if self._connection is None:
            self._connection = await self._database.connect(bounded=True)
        return self._connection


async def _configure(connection: Connection) -> None:
    """Every pooled connection: statements bounded in time, and no transaction left open."""
    await connection.execute(
        "SELECT set_config('statement_timeout', %s, false),"
        " set_config('idle_in_transaction_session_timeout', %s, false)",
        (STATEMENT_TIMEOUT, IDLE_IN_TRANSACTION_TIMEOUT),
    )


def _unreachable(error: psycopg.Error) -> bool:
    """Whether the error means the database is out of reach, rather than one statement
    failing: no connection to be had, or the connection lost or shut down."""
    if isinstance(error, PoolTimeout):
        return True
    state = error.sqlstate
    if state is None:
        return isinstance(error, psycopg.OperationalError)
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _where(params: dict[str, Any]) -> str:
    """host:port/database for messages: what an operator needs, nothing secret."""
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    database = str(params.get("dbname") or os.environ.get("PGDATABASE") or "")
    return f"{host}:{port}/{database}"


def _secrets_of(url: str, params: dict[str, Any]) -> list[str]:
    """Every spelling of the password a message could carry, longest first."""
    found = {str(params.get("password") or ""), os.environ.get("PGPASSWORD", "")}
    for password in list(found):
        found.add(quote(password, safe=""))
    match = re.match(r"^[a-z]+://[^:@/]*:([^@/]*)@", url)
    if match:
        found.add(match.group(1))
    return sorted((secret for secret in found if secret), key=len, reverse=True)

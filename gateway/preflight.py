"""What `gateway serve` makes sure of before it serves: the address is its own, a SQLite store
opens, and every file subscriber can write where its path says.

Each failure here stops the start with one clear log line, before anything answers on the
port: a gateway that started and then failed its first delivery (or served nothing, its port
taken by another process) would look healthy to whatever supervises it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from gateway.config import FileSubscriber, GatewayConfig, SubscriberConfig
from gateway.store import StoreUnavailable, open_store

__all__ = ["file_subscriber_problems", "listen_socket", "store_problem"]


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: any free one), ready to hand to uvicorn and to
    worker processes; OSError when the address is taken or not ours to bind.

    Bound here rather than by uvicorn, which binds only after the app has started (logging
    `started` for a gateway that is about to fail) and reports a busy port in plain text.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


async def store_problem(config: GatewayConfig) -> str | None:
    """Why a SQLite store cannot be opened, or None once it opened (creating its files and
    schema); StoreSchemaError when its schema is newer than this gateway's.

    Opened once here so that a file subscriber next to the database (./data) finds its
    directory, and an unopenable file stops the start instead of every worker's. A shared store
    (PostgreSQL) is not: it may be down or being migrated by another node, both of which pass,
    and each process opens it in the background while it answers 503 (gateway/app.py).
    """
    url = config.store.url
    if url.shared:
        return None
    store = open_store(url.reveal())
    try:
        await store.open()
    except (StoreUnavailable, OSError) as error:
        return url.scrub(f"cannot open the store: {error}")
    await store.close()
    return None


def file_subscriber_problems(subscribers: Mapping[str, SubscriberConfig]) -> list[str]:
    """Each file subscriber whose directory is missing or not writable. Nothing is created: a
    typo in a path (or `/nonexistent-dir` as root) must not become a directory tree."""
    problems = []
    for name, subscriber in subscribers.items():
        if not isinstance(subscriber, FileSubscriber):
            continue
        directory = subscriber.path.parent
        place = f"subscribers.{name}.path"
        if not directory.is_dir():
            problems.append(f"{place}: the directory {str(directory)!r} does not exist")
        elif not os.access(directory, os.W_OK | os.X_OK):
            problems.append(f"{place}: the directory {str(directory)!r} is not writable")
        elif subscriber.path.exists() and not os.access(subscriber.path, os.W_OK):
            problems.append(f"{place}: {str(subscriber.path)!r} is not writable")
    return problems

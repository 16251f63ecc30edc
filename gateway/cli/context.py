"""What the commands share: their exit codes, and the one way a command gets its config, checks
a subscriber it names, opens its store and, for replay and redrive, its tracing.

When one of those cannot be had, `CommandRefused` carries what to say: `main` prints it on
stderr and exits 1, so no command checks for it in turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.store import Store, StoreSchemaError, StoreUnavailable, open_store
from gateway.tracing import Tracing, TracingConfigError

T = TypeVar("T")

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class CommandRefused(Exception):
    """A command cannot go on: its config does not load, it names no configured subscriber, or
    its store or tracing cannot be had. `main` prints `lines` on stderr (their secrets scrubbed
    already) and exits 1."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def command_config(path: Path, *, subscriber: str | None = None) -> GatewayConfig:
    """The config at `path`, every problem of it (with its place) refused otherwise; with
    `subscriber`, also refused when the config names no such subscriber."""
    try:
        config = load_config(path)
    except ConfigError as error:
        raise CommandRefused(*(f"{path}: {problem}" for problem in error.problems)) from None
    if subscriber is not None and subscriber not in config.subscribers:
        known = ", ".join(sorted(config.subscribers)) or "none"
        raise CommandRefused(f"no subscriber named {subscriber!r} (configured: {known})")
    return config


def with_store(config: GatewayConfig, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` against the config's store, opened for the duration of one command.

    Whichever store it is: a command runs against any node's config (docs/reference/nodes.md)."""
    url = config.store.url

    async def run() -> T:
        store = open_store(url.reveal())
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreSchemaError as error:
        raise CommandRefused(url.scrub(str(error))) from None
    except StoreUnavailable as error:
        raise CommandRefused(url.scrub(f"store unavailable: {error}")) from None


def with_traced_store(config: GatewayConfig, work: Callable[[Store, Tracing], Awaitable[T]]) -> T:
    """`with_store`, for a command that starts a trace (replay, redrive: docs/reference/traces.md)
    and exports its root span from here: its tracing comes from the `OTEL_*` variables as `gateway
    serve` reads them (refused when they ask for what this gateway cannot do), and is shut down, its
    spans sent, before the command exits."""
    try:
        tracing = Tracing.from_environment()
    except TracingConfigError as error:
        raise CommandRefused(f"error: {error}") from None
    try:
        return with_store(config, lambda store: work(store, tracing))
    finally:
        tracing.shutdown()


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

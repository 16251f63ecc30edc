"""The config file as types (docs/reference/configuration.md): each section a Struct whose
annotations are its schema, read by gateway/config/loading.py. Subscribers are a tagged union on
`kind`, whose members live with their transports (gateway/delivery/settings/); sources are adapters'
SourceSettings (adapters/source.py); routes are the router's RouteConfig (gateway/routing.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Final, Literal

import msgspec

from adapters.base import Adapter
from adapters.registry import shipped_adapters
from adapters.source import Network, Secret, SourceSettings
from gateway.delivery.settings import SubscriberConfig
from gateway.routing import RouteConfig
from gateway.store.url import StoreUrl, check_store_url

__all__ = [
    "AUTO",
    "AUTO_WORKERS_MAX",
    "MAX_WORKERS",
    "MIN_ADMIN_TOKEN_LENGTH",
    "ROLES",
    "AdminConfig",
    "ConfigError",
    "ConfigProblem",
    "GatewayConfig",
    "Role",
    "ServerConfig",
    "StoreConfig",
    "worker_count",
]

# docs/reference/nodes.md: what one process does. "all" receives and delivers; "ingest" receives and
# sends nothing; "deliver" sends, and its /webhooks/... answer 404.
Role = Literal["all", "ingest", "deliver"]
ROLES: tuple[Role, ...] = ("all", "ingest", "deliver")
AUTO = "auto"
# `workers = "auto"`: one per CPU, up to this many.
AUTO_WORKERS_MAX = 8
# More worker processes than this is a typo, not a machine.
MAX_WORKERS = 64
# An admin token opens every operator action (replay, redrive, quarantine): shorter than this,
# or made of a handful of distinct characters ("aaaaaaaaaaaaaaaa", "1234123412341234"), it is
# within reach of guessing.
MIN_ADMIN_TOKEN_LENGTH: Final = 16
_NonEmpty = msgspec.Meta(min_length=1)


def _host(host: str) -> str:
    if any(character.isspace() for character in host):
        raise ValueError("a host name or address has no whitespace")
    return host


def _admin_token(token: Secret) -> Secret:
    if not token.reveal().strip():
        raise ValueError("an empty token would open the admin API to anyone")
    return token


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: Annotated[str, _NonEmpty, _host] = "127.0.0.1"
    # 0 asks the system for any free port (tests and ad hoc runs).
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1_048_576
    trusted_proxies: tuple[Network, ...] = ()
    # Identical processes, each serving the port and delivering, sharing only the store;
    # None ("auto"): one per CPU, up to AUTO_WORKERS_MAX (`worker_count`).
    workers: Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKERS, extra={"or": AUTO})] | None = None
    role: Role = "all"


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    # Shown redacted wherever it is printed: a PostgreSQL URL may carry a password.
    url: Annotated[StoreUrl, check_store_url] = StoreUrl("sqlite:///./data/gateway.db")
    # Delivered events (and their attempts) older than this are deleted (gateway/retention.py);
    # fractions allowed (0.5 is twelve hours), and more than a century is a typo.
    retention_days: Annotated[float, msgspec.Meta(gt=0, le=36_500, extra={"unit": "days"})] = 30.0


class AdminConfig(msgspec.Struct, frozen=True, kw_only=True):
    """`[admin]`: the tokens that open the admin API and page (docs/reference/admin.md); none (the
    default) turns both off. Several tokens allow a rotation."""

    tokens: Annotated[tuple[Annotated[Secret, _admin_token], ...], msgspec.Meta(min_length=1)] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    sources: Mapping[str, SourceSettings] = msgspec.field(default_factory=dict)
    subscribers: Mapping[str, SubscriberConfig] = msgspec.field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    # Every adapter a source may name, by name: the built-ins, the presets and the file's
    # `[providers.*]` (one of those replaces a built-in or preset of its name). The ingress and
    # every command look adapters up here, never in a registry of their own.
    adapters: Mapping[str, Adapter] = msgspec.field(default_factory=shipped_adapters)
    # What check-config prints and `gateway serve` logs at start, the file still being usable
    # (a source open to anyone, a subscriber no route names).
    warnings: tuple[str, ...] = ()

    def ordered(self, subscribers: Iterable[str]) -> tuple[str, ...]:
        """Those of `subscribers` that take one subject's events in order
        (docs/reference/ordering.md)."""
        return tuple(
            name
            for name in subscribers
            if name in self.subscribers and self.subscribers[name].ordering == "subject"
        )


class ConfigProblem(msgspec.Struct, frozen=True):
    """One thing wrong with the file: where (`routes[1].subscribers[0]`) and what."""

    place: str
    message: str

    def __str__(self) -> str:
        return f"{self.place}: {self.message}"


class ConfigError(Exception):
    """The file cannot be used; `problems` lists every reason, not only the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


def worker_count(server: ServerConfig) -> int:
    """How many processes serve the port: `server.workers`, or one per CPU when "auto"."""
    if server.workers is not None:
        return server.workers
    return max(1, min(os.cpu_count() or 1, AUTO_WORKERS_MAX))


# Source and subscriber names appear in URLs (`/webhooks/<source>`) and event ids.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

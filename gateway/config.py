"""The configuration file (CONTRACT.md 5): TOML in, typed Structs out, every problem with its place.

The file is the picture of the running pipeline: sources (one provider account each, read by an
adapter), subscribers (where events go) and routes (which events go where).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeVar
from urllib.parse import SplitResult, urlsplit

import msgspec

from adapters.base import Adapter
from adapters.described import (
    described_adapter,
    parse_description,
    public_key_problem,
    secret_problem,
)
from adapters.described.schemes import HmacScheme, PublicKeyScheme, StandardWebhooksScheme
from adapters.places import did_you_mean, toml_kind
from adapters.places import dotted as _key
from adapters.presets import PRESETS
from adapters.registry import ADAPTERS
from adapters.source import Secret, SourceSettings
from gateway.broker_url import BrokerUrl
from gateway.delivery.templates import template_problem
from gateway.signing import decode_signing_secret
from gateway.store.url import POSTGRESQL_SCHEMES, SQLITE_PREFIX, StoreUrl
from schemas.money import CURRENCY_EXPONENTS, MoneyError, normalize_currency_code
from schemas.taxonomy import CANONICAL_TYPES, KINDS, OPEN_KINDS

__all__ = [
    "AUTO",
    "DEFAULT_CONFIG_PATH",
    "MIN_ADMIN_TOKEN_LENGTH",
    "ROLES",
    "STANDARD_WEBHOOKS_SCHEDULE",
    "AdminConfig",
    "AmqpSubscriber",
    "ConfigError",
    "ConfigProblem",
    "FileSubscriber",
    "GatewayConfig",
    "HttpSubscriber",
    "NatsSubscriber",
    "Ordering",
    "RedisSubscriber",
    "Role",
    "RouteConfig",
    "ServerConfig",
    "StoreConfig",
    "SubscriberConfig",
    "SubscriberKind",
    "file_subscriber_problems",
    "load_config",
    "shipped_adapters",
    "worker_count",
]

DEFAULT_CONFIG_PATH = Path("config/gateway.toml")
T = TypeVar("T")
Choice = TypeVar("Choice", bound=str)

# Seconds before each retry: the Standard Webhooks recommendation after the immediate attempt
# (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h).
STANDARD_WEBHOOKS_SCHEDULE: tuple[float, ...] = (
    5,
    300,
    1800,
    7200,
    18000,
    36000,
    50400,
    72000,
    86400,
)

SubscriberKind = Literal["http", "file", "redis", "nats", "amqp"]
# CONTRACT.md 4b: "subject" sends one source's events about one subject one at a time, in the
# order they were committed; "none" sends everything in parallel.
Ordering = Literal["subject", "none"]
# CONTRACT.md 7: what one process does. "all" receives and delivers; "ingest" receives and
# sends nothing; "deliver" sends, and its /webhooks/... answer 404.
Role = Literal["all", "ingest", "deliver"]
AUTO = "auto"
# `workers = "auto"`: one per CPU, up to this many.
AUTO_WORKERS_MAX = 8
ROLES: tuple[Role, ...] = ("all", "ingest", "deliver")

# Source and subscriber names appear in URLs (`/webhooks/<source>`) and event ids.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A provider's name begins the type of its unmapped events (`<name>.<provider type>`) and is
# the CloudEvents `provider`: no dot, so that the type's first part is the name.
_PROVIDER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# RFC 9110 token: what a header field name is made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# RFC 3986 unreserved characters: a parameter name that never needs encoding.
_QUERY_PARAMETER = re.compile(r"[A-Za-z0-9._~-]{1,64}")
# RFC 3986 URI-reference: reserved and unreserved characters, and %-escapes.
_URI_REFERENCE = re.compile(r"(?:[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+")

_SECTIONS = ("server", "store", "providers", "sources", "subscribers", "routes", "admin")
_ADMIN_KEYS = ("token", "tokens")
# An admin token opens every operator action (replay, redrive, quarantine): shorter than this,
# or made of a handful of distinct characters ("aaaaaaaaaaaaaaaa", "1234123412341234"), it is
# within reach of guessing.
MIN_ADMIN_TOKEN_LENGTH: Final = 16
_MIN_ADMIN_TOKEN_DISTINCT: Final = 6
_SERVER_KEYS = (
    "host",
    "port",
    "max_body_bytes",
    "trusted_proxies",
    "workers",
    "role",
)
# More worker processes than this is a typo, not a machine.
MAX_WORKERS = 64
_STORE_KEYS = ("url", "retention_days")
# Keys earlier versions took, with what to do instead: a config written for them gets this,
# not a bare "unknown key". The writer process and its deliver processes are gone: every
# process of `gateway serve` stores and delivers, on SQLite as on PostgreSQL.
_REMOVED_KEYS = {
    "server.deliver_processes": "removed: every worker process delivers now; set"
    " server.workers instead",
    "server.deliver_nice": "removed: there are no deliver processes any more; delete the line",
    "store.writer": "removed: every worker process opens the store itself now; delete the line",
}
# Retention longer than this is a typo (or a wish to keep everything: a very large number).
_MAX_RETENTION_DAYS = 36_500
_SOURCE_KEYS = (
    "adapter",
    "secret",
    "secrets",
    "token",
    "tokens",
    "token_param",
    "allow_ips",
    "tolerance_seconds",
    "currency",
    "signature_header",
    "uri",
    "allow_unauthenticated",
    "public_url",
    "public_key",
)
# Keys every subscriber kind takes (the delivery keys), then each kind's own.
_SUBSCRIBER_KEYS = (
    "kind",
    "secret",
    "secrets",
    "timeout_seconds",
    "retry_schedule",
    "max_in_flight",
    "circuit_breaker_failures",
    "circuit_breaker_seconds",
    "ordering",
)
_KIND_KEYS: Mapping[str, tuple[str, ...]] = {
    "http": ("url",),
    "file": ("path",),
    "redis": ("url", "stream", "maxlen"),
    "nats": ("url", "subject"),
    "amqp": ("url", "exchange", "routing_key"),
}
# The URL schemes of each broker's client (TLS: rediss, tls, amqps).
_BROKER_SCHEMES: Mapping[str, tuple[str, ...]] = {
    "redis": ("redis", "rediss"),
    "nats": ("nats", "tls"),
    "amqp": ("amqp", "amqps"),
}
# RabbitMQ: an exchange name is up to 127 of these; a routing key up to 255 bytes.
_AMQP_EXCHANGE = re.compile(r"[A-Za-z0-9_.:-]{0,127}")
_AMQP_MAX_ROUTING_KEY_BYTES = 255
_ROUTE_KEYS = ("sources", "types", "subscribers")

_KINDS: tuple[SubscriberKind, ...] = ("http", "file", "redis", "nats", "amqp")
_ORDERINGS: tuple[Ordering, ...] = ("subject", "none")
_WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
_MIN_WEBHOOK_KEY_BYTES = 16
_SIGNING_KEY_PREFIX = "whsk_"  # the Standard Webhooks v1a prefix
_MAX_CIRCUIT_FAILURES = 1_000_000
_MAX_TIMEOUT = 300.0
_MAX_RETRY_DELAY = 86400.0  # 24 h, the longest a Retry-After is honoured too (CONTRACT.md 4)
_MAX_RETRIES = 20
_MAX_IN_FLIGHT = 10_000


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    # Identical processes, each serving the port and delivering, sharing only the store;
    # None ("auto"): one per CPU, up to AUTO_WORKERS_MAX (`worker_count`).
    workers: int | None = None
    role: Role = "all"


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    # Shown redacted wherever it is printed: a PostgreSQL URL may carry a password.
    url: StoreUrl = StoreUrl("sqlite:///./data/gateway.db")
    # Delivered events (and their attempts) older than this are deleted (gateway/retention.py).
    retention_days: float = 30.0


class AdminConfig(msgspec.Struct, frozen=True, kw_only=True):
    """`[admin]`: the tokens that open the admin API and page (CONTRACT.md 8); none (the
    default) turns both off. Several tokens allow a rotation."""

    tokens: tuple[Secret, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)


class SubscriberConfig(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """The delivery keys every kind of subscriber takes; each kind is a subclass with its own
    (a tagged union on `kind`: gateway/delivery/registry.py finds the transport by it)."""

    kind: ClassVar[SubscriberKind]
    name: str
    secrets: tuple[Secret, ...] = ()
    timeout_seconds: float = 10.0
    retry_schedule: tuple[float, ...] = STANDARD_WEBHOOKS_SCHEDULE
    max_in_flight: int = 64
    # Consecutive failed attempts that pause the subscriber (0: never), and for how long before
    # one delivery probes whether it is back.
    circuit_breaker_failures: int = 20
    circuit_breaker_seconds: float = 60.0
    ordering: Ordering = "none"


class HttpSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="http"):
    """Standard Webhooks POSTs to `url` (a secret is required: CONTRACT.md 4)."""

    kind: ClassVar[SubscriberKind] = "http"
    url: str


class FileSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="file"):
    """One JSON line per delivery appended to `path`."""

    kind: ClassVar[SubscriberKind] = "file"
    path: Path


class RedisSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="redis"):
    """XADD to a Redis stream (CONTRACT.md 4a); `maxlen` trims it approximately (MAXLEN ~)."""

    kind: ClassVar[SubscriberKind] = "redis"
    url: BrokerUrl
    stream: str
    maxlen: int | None = None


class NatsSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="nats"):
    """A JetStream publish on `subject`, a template of `{type}` and `{source}`."""

    kind: ClassVar[SubscriberKind] = "nats"
    url: BrokerUrl
    subject: str


class AmqpSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="amqp"):
    """A confirmed, mandatory, persistent publish to `exchange` ("" is the default exchange)
    with `routing_key`, a template of `{type}` and `{source}`."""

    kind: ClassVar[SubscriberKind] = "amqp"
    url: BrokerUrl
    routing_key: str
    exchange: str = ""


class RouteConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One `[[routes]]` table. None means "all" (the key was absent)."""

    sources: tuple[str, ...] | None = None
    types: tuple[str, ...] | None = None
    subscribers: tuple[str, ...] = ()


def shipped_adapters() -> dict[str, Adapter]:
    """The adapters every config may name: the built-ins and the presets (CONTRACT.md 1b)."""
    return {**ADAPTERS, **PRESETS}


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
    # Sources with `allow_unauthenticated = true`: `gateway serve` warns about each at start.
    warnings: tuple[str, ...] = ()

    def ordered(self, subscribers: Iterable[str]) -> tuple[str, ...]:
        """Those of `subscribers` that take one subject's events in order (CONTRACT.md 4b)."""
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


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, interpolate and validate the file at `path`; raise ConfigError listing every problem.

    `environ` replaces `${NAME}` (default: os.environ).
    """
    checker = _Checker()
    document = _read_document(checker, path)
    if document is None:
        raise ConfigError(checker.problems)
    tree = _interpolate(checker, document, "", os.environ if environ is None else environ)
    assert isinstance(tree, dict)  # a TOML document is a table
    config = _gateway(checker, tree)
    if checker.problems or config is None:
        raise ConfigError(checker.problems)
    return config


# --- Reading and interpolation ------------------------------------------------------------------


class _Unresolved:
    """Stands in for a string whose `${NAME}` is unset: already reported, so checked no further."""

    def __repr__(self) -> str:
        return "<unresolved>"


_UNRESOLVED = _Unresolved()


class _Checker:
    """Collects problems and warnings, and knows which values came from the environment."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []
        self.warnings: list[str] = []
        # place -> the variables its string was built from: such a value may be a secret, so
        # messages name the variables instead of quoting it.
        self.from_environment: dict[str, list[str]] = {}

    def add(self, place: str, message: str) -> None:
        self.problems.append(ConfigProblem(place, message))

    def show(self, place: str, value: str) -> str:
        """`value` quoted for a message, unless it came from the environment."""
        names = self.from_environment.get(place)
        if names is None:
            return json.dumps(value, ensure_ascii=False)
        return "(the value of " + ", ".join(f"${{{name}}}" for name in names) + ")"


def _read_document(checker: _Checker, path: Path) -> dict[str, Any] | None:
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        checker.add("file", f"cannot read {path}: {error.strerror or error}")
        return None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        checker.add("file", f"not UTF-8 text (byte {error.start})")
    except tomllib.TOMLDecodeError as error:
        # tomllib says where ("at line 3, column 7") and never quotes the text itself.
        checker.add("file", f"not valid TOML: {error}")
    return None


def _interpolate(
    checker: _Checker, value: object, place: str, environ: Mapping[str, str]
) -> object:
    """`value` with `${NAME}` replaced in every string; an unset NAME leaves _UNRESOLVED."""
    if isinstance(value, dict):
        return {
            key: _interpolate(checker, item, _key(place, key), environ)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(checker, item, _index(place, number), environ)
            for number, item in enumerate(value)
        ]
    if not isinstance(value, str):
        return value
    names = _ENV_REFERENCE.findall(value)
    if not names:
        return value
    missing = [name for name in dict.fromkeys(names) if name not in environ]
    for name in missing:
        checker.add(place, f"environment variable {name} is not set")
    if missing:
        return _UNRESOLVED
    checker.from_environment[place] = list(dict.fromkeys(names))
    # One pass: a value that itself contains `${...}` is not expanded again.
    return _ENV_REFERENCE.sub(lambda match: environ[match.group(1)], value)


# --- Places -------------------------------------------------------------------------------------


def _index(parent: str, number: int) -> str:
    return f"{parent}[{number}]"


def _check_keys(
    checker: _Checker,
    table: Mapping[str, object],
    known: Sequence[str],
    place: str,
    what: str = "key",
) -> None:
    for key in table:
        if key in known:
            continue
        removed = _REMOVED_KEYS.get(_key(place, key))
        if removed is not None:
            checker.add(_key(place, key), removed)
        else:
            checker.add(_key(place, key), f"unknown {what}{did_you_mean(key, known)}")


# --- Values -------------------------------------------------------------------------------------
# Each reads one value, reports what is wrong with it at `place`, and returns it or None.
# An _UNRESOLVED value returns None silently: its unset variable is already reported.


def _table(checker: _Checker, value: object, place: str) -> dict[str, object] | None:
    if value is _UNRESOLVED:
        return None
    if not isinstance(value, dict):
        checker.add(place, f"expected a table, got {toml_kind(value)}")
        return None
    return value


def _array(checker: _Checker, value: object, place: str) -> list[object] | None:
    if value is _UNRESOLVED:
        return None
    if not isinstance(value, list):
        checker.add(place, f"expected an array, got {toml_kind(value)}")
        return None
    return value


def _string(checker: _Checker, value: object, place: str) -> str | None:
    """A non-empty string."""
    if value is _UNRESOLVED:
        return None
    if not isinstance(value, str):
        checker.add(place, f"expected a string, got {toml_kind(value)}")
        return None
    if not value:
        checker.add(place, "must not be empty")
        return None
    return value


def _boolean(checker: _Checker, value: object, place: str) -> bool | None:
    if value is _UNRESOLVED:
        return None
    if not isinstance(value, bool):
        checker.add(place, f"expected true or false, got {toml_kind(value)}")
        return None
    return value


def _integer(
    checker: _Checker, value: object, place: str, lowest: int, highest: int | None = None
) -> int | None:
    if value is _UNRESOLVED:
        return None
    # TOML's true is no number, though Python's bool is an int.
    if isinstance(value, bool) or not isinstance(value, int):
        checker.add(place, f"expected an integer, got {toml_kind(value)}")
        return None
    if value < lowest or (highest is not None and value > highest):
        bounds = f"from {lowest} to {highest}" if highest is not None else f"at least {lowest}"
        checker.add(place, f"must be {bounds}, not {value}")
        return None
    return value


def _seconds(
    checker: _Checker, value: object, place: str, *, zero_ok: bool, highest: float
) -> float | None:
    """A number of seconds, integer or float, finite and within (0 or more, `highest`)."""
    if value is _UNRESOLVED:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        checker.add(place, f"expected a number of seconds, got {toml_kind(value)}")
        return None
    # TOML has nan and inf; neither is a duration.
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or value > highest:
        lowest = "from 0" if zero_ok else "more than 0 and"
        checker.add(place, f"must be {lowest} up to {highest:g} seconds, not {value}")
        return None
    return float(value)


def _strings(
    checker: _Checker, value: object, place: str, empty: str = "must not be an empty array"
) -> list[tuple[str, str]] | None:
    """A non-empty array of non-empty strings, as (place, string) pairs; `empty` says why not."""
    items = _array(checker, value, place)
    if items is None:
        return None
    if not items:
        checker.add(place, empty)
        return None
    strings: list[tuple[str, str]] = []
    for number, item in enumerate(items):
        item_place = _index(place, number)
        text = _string(checker, item, item_place)
        if text is not None:
            strings.append((item_place, text))
    return strings


def _one_or_many(
    checker: _Checker, table: Mapping[str, object], place: str, one: str, many: str
) -> list[tuple[str, str]]:
    """`one = "x"` or `many = ["x", "y"]` (a rotation), never both, as (place, string) pairs."""
    if one in table and many in table:
        checker.add(_key(place, many), f"set either {one} or {many}, not both")
    values: list[tuple[str, str]] = []
    if one in table:
        text = _string(checker, table[one], _key(place, one))
        if text is not None:
            values.append((_key(place, one), text))
    if many in table:
        values.extend(_strings(checker, table[many], _key(place, many)) or [])
    return values


def _network(checker: _Checker, value: object, place: str) -> IPv4Network | IPv6Network | None:
    """A CIDR; a bare address means that one address (/32 or /128)."""
    text = _string(checker, value, place)
    if text is None:
        return None
    try:
        return ip_network(text)
    except ValueError:
        pass
    shown = checker.show(place, text)
    try:
        loose = ip_network(text, strict=False)
    except ValueError:
        checker.add(place, f"not an IP address or CIDR: {shown}")
        return None
    hint = "" if place in checker.from_environment else f" (did you mean {loose}?)"
    checker.add(place, f"{shown} has host bits set{hint}")
    return None


def _networks(
    checker: _Checker, value: object, place: str
) -> tuple[IPv4Network | IPv6Network, ...] | None:
    items = _array(checker, value, place)
    if items is None:
        return None
    networks = [_network(checker, item, _index(place, number)) for number, item in enumerate(items)]
    return tuple(network for network in networks if network is not None)


def _name(checker: _Checker, name: str, place: str, what: str) -> None:
    if not _NAME.fullmatch(name):
        checker.add(
            place,
            f"not a valid {what} name: 1 to 64 of A-Za-z0-9._- starting with a letter or digit"
            " (it appears in URLs and event ids)",
        )


# --- Sections -----------------------------------------------------------------------------------


def _gateway(checker: _Checker, document: dict[str, object]) -> GatewayConfig | None:
    _check_keys(checker, document, _SECTIONS, "", "section")
    server = _server(checker, document.get("server", {}))
    store = _store(checker, document.get("store", {}))
    described = _providers(checker, document.get("providers", {}))
    adapters = {**shipped_adapters(), **described}
    # Described but not usable (their problems are reported): a source naming one has no
    # "unknown adapter" besides.
    broken = set(_names_in(document.get("providers"))) - set(described)
    sources = _sources(checker, document.get("sources"), adapters, broken)
    subscribers = _subscribers(checker, document.get("subscribers", {}))
    defined_sources = _names_in(document.get("sources"))
    defined_subscribers = _names_in(document.get("subscribers"))
    routes = _routes(
        checker,
        document.get("routes", []),
        defined_sources,
        defined_subscribers,
        [*adapters, *broken],
    )
    if routes is not None:
        _warn_unrouted(checker, routes, defined_subscribers)
    admin = _admin(checker, document.get("admin", {}))
    if server is None or store is None or sources is None or subscribers is None or routes is None:
        return None
    if admin is None:
        return None
    _warn_unwritable_files(checker, subscribers, store)
    return GatewayConfig(
        server=server,
        store=store,
        sources=sources,
        subscribers=subscribers,
        routes=routes,
        admin=admin,
        adapters=adapters,
        warnings=tuple(checker.warnings),
    )


def _warn_unwritable_files(
    checker: _Checker, subscribers: Mapping[str, SubscriberConfig], store: StoreConfig
) -> None:
    """What `serve` will refuse to start over (gateway/preflight.py), said by check-config first.

    A warning, not a problem: the file is judged on this machine, in this working directory,
    and a config is often checked on another than it runs on. A directory the SQLite store makes
    when it opens (./data for the default config) is not missing: serve opens the store first.
    """
    made_by_store: set[str] = set()
    database = store.url.reveal()
    if database.startswith(SQLITE_PREFIX):
        path = Path(os.path.abspath(database[len(SQLITE_PREFIX) :]))
        made_by_store = {str(directory) for directory in path.parents}
    judged = {
        name: subscriber
        for name, subscriber in subscribers.items()
        if not (
            isinstance(subscriber, FileSubscriber)
            and not subscriber.path.parent.exists()
            and os.path.abspath(subscriber.path.parent) in made_by_store
        )
    }
    for problem in file_subscriber_problems(judged):
        checker.warnings.append(f"{problem}: serve will refuse to start")


def file_subscriber_problems(subscribers: Mapping[str, SubscriberConfig]) -> list[str]:
    """Each file subscriber whose directory is missing or not writable (relative paths from the
    working directory, as serve reads them). Nothing is created: a typo in a path (or
    `/nonexistent-dir` as root) must not become a directory tree."""
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


def _names_in(section: object) -> list[str]:
    """The names a section defines, valid or not: a route naming one is not also wrong."""
    return list(section) if isinstance(section, dict) else []


def _server(checker: _Checker, value: object) -> ServerConfig | None:
    place = "server"
    table = _table(checker, value, place)
    if table is None:
        return None
    before = len(checker.problems)
    _check_keys(checker, table, _SERVER_KEYS, place)
    settings: dict[str, Any] = {}
    if "host" in table:
        host = _string(checker, table["host"], _key(place, "host"))
        if host is not None and any(character.isspace() for character in host):
            checker.add(_key(place, "host"), "a host name or address has no whitespace")
        settings["host"] = host
    if "port" in table:
        # 0 asks the system for any free port (tests and ad hoc runs).
        settings["port"] = _integer(checker, table["port"], _key(place, "port"), 0, 65535)
    if "max_body_bytes" in table:
        settings["max_body_bytes"] = _integer(
            checker, table["max_body_bytes"], _key(place, "max_body_bytes"), 1
        )
    if "workers" in table and table["workers"] != AUTO:
        settings["workers"] = _count_or_auto(checker, table["workers"], _key(place, "workers"))
    if "trusted_proxies" in table:
        settings["trusted_proxies"] = _networks(
            checker, table["trusted_proxies"], _key(place, "trusted_proxies")
        )
    if "role" in table:
        settings["role"] = _choice(checker, table["role"], _key(place, "role"), "role", ROLES)
    if len(checker.problems) > before:
        return None
    return ServerConfig(**{key: item for key, item in settings.items() if item is not None})


def _count_or_auto(checker: _Checker, value: object, place: str) -> int | None:
    """A number of processes ("auto" is the caller's: None)."""
    if isinstance(value, str):
        checker.add(place, f'expected an integer or "auto", got {checker.show(place, value)}')
        return None
    return _integer(checker, value, place, 1, MAX_WORKERS)


def _admin(checker: _Checker, value: object) -> AdminConfig | None:
    place = "admin"
    table = _table(checker, value, place)
    if table is None:
        return None
    before = len(checker.problems)
    _check_keys(checker, table, _ADMIN_KEYS, place)
    tokens = _one_or_many(checker, table, place, "token", "tokens")
    for token_place, token in tokens:
        if not token.strip():
            checker.add(token_place, "an empty token would open the admin API to anyone")
        elif _weak_token(token):
            # A warning, not a problem: a short token still works, and a test set-up may use one.
            # Never quoted: even a weak token is a secret.
            checker.warnings.append(
                f"{token_place}: too weak to keep the admin API closed (fewer than"
                f" {MIN_ADMIN_TOKEN_LENGTH} characters, or the same few repeated); use a random"
                " one, e.g. `openssl rand -hex 32`"
            )
    if len(checker.problems) > before:
        return None
    return AdminConfig(tokens=tuple(Secret(token) for _, token in tokens))


def _weak_token(token: str) -> bool:
    return len(token) < MIN_ADMIN_TOKEN_LENGTH or len(set(token)) < _MIN_ADMIN_TOKEN_DISTINCT


def _store(checker: _Checker, value: object) -> StoreConfig | None:
    place = "store"
    table = _table(checker, value, place)
    if table is None:
        return None
    _check_keys(checker, table, _STORE_KEYS, place)
    default = StoreConfig()
    retention_days: float | None = default.retention_days
    if "retention_days" in table:
        retention_days = _retention_days(
            checker, table["retention_days"], _key(place, "retention_days")
        )
    url = _store_url(checker, table, place) if "url" in table else default.url
    if url is None or retention_days is None:
        return None
    return StoreConfig(url=url, retention_days=retention_days)


def _retention_days(checker: _Checker, value: object, place: str) -> float | None:
    """A number of days, more than 0; fractions allowed (0.5 is twelve hours)."""
    if value is _UNRESOLVED:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        checker.add(place, f"expected a number of days, got {toml_kind(value)}")
        return None
    # TOML has nan and inf; neither is a number of days.
    if not math.isfinite(value) or value <= 0 or value > _MAX_RETENTION_DAYS:
        checker.add(place, f"must be more than 0 and up to {_MAX_RETENTION_DAYS} days, not {value}")
        return None
    return float(value)


def _store_url(checker: _Checker, table: Mapping[str, object], place: str) -> StoreUrl | None:
    url_place = _key(place, "url")
    url = _string(checker, table["url"], url_place)
    if url is None:
        return None
    # The URL is never quoted: a database URL may carry a password.
    if url.startswith(SQLITE_PREFIX):
        problem = _sqlite_url_problem(url.removeprefix(SQLITE_PREFIX))
    elif url.startswith(tuple(f"{scheme}://" for scheme in POSTGRESQL_SCHEMES)):
        problem = _postgresql_url_problem(url)
    else:
        problem = _unknown_store_url(url)
    if problem is not None:
        checker.add(url_place, problem)
        return None
    return StoreUrl(url)


def _sqlite_url_problem(database: str) -> str | None:
    if not database:
        return "the database path is missing: sqlite:///<path>"
    if "?" in database:
        return "query parameters are not supported: sqlite:///<path>"
    if database == ":memory:":
        return (
            "an in-memory database loses every event when the process stops;"
            " give a file path: sqlite:///<path>"
        )
    return None


def _postgresql_url_problem(url: str) -> str | None:
    """What libpq would refuse in `url` before connecting, or None. libpq itself reads it
    (psycopg's `conninfo_to_dict` is its PQconninfoParse): this only adds what a gateway
    needs, a host (or a socket directory) to reach and ports that are ports."""
    if any(character.isspace() or ord(character) < 32 for character in url):
        return "not a URL: it contains whitespace or control characters (percent-encode them)"
    # Imported here: only a PostgreSQL URL needs libpq.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parameters = conninfo_to_dict(url)
    except psycopg.Error as error:
        reason = _libpq_reason(str(error)) if '"' not in url else None
        shown = StoreUrl(url).scrub(f": {reason}") if reason else ""
        return f"libpq cannot read the URL{shown}"
    hosts = [str(parameters.get(key) or "") for key in ("host", "hostaddr")]
    if not any(host.strip(",") for host in hosts):
        return (
            "the URL names no host: postgresql://<user>:<password>@<host>:<port>/<database>,"
            " or a socket directory as ?host=/run/postgresql"
        )
    for port in str(parameters.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            return "a port is not a number from 1 to 65535"
    return None


def _libpq_reason(message: str) -> str | None:
    """libpq's complaint without what it quotes of the URL (`"pw%zz"`: a piece of it may be the
    password); a one-character quote names a separator (`"="`) and stays. None when its quotes
    do not pair up (nothing of it is then safe to show)."""
    lines = message.strip().splitlines()
    if not lines or lines[0].count('"') % 2:
        return None
    reason = re.sub(
        r'"([^"]*)"', lambda quote: quote[0] if len(quote[1]) <= 1 else "(...)", lines[0]
    )
    return reason.rstrip(": ") or None


def _unknown_store_url(url: str) -> str:
    scheme = url.partition(":")[0].lower() if _URL_SCHEME.match(url) else ""
    if scheme == "sqlite":
        return "expected sqlite:///<path> (three slashes, then the path)"
    if scheme in POSTGRESQL_SCHEMES:
        return "expected postgresql://... or postgres://... (in lower case, then //)"
    if scheme:
        return f"the {scheme} store is not supported; use sqlite:///<path> or postgresql://..."
    return "expected a store URL: sqlite:///<path> or postgresql://..."


def _providers(checker: _Checker, value: object) -> dict[str, Adapter]:
    """The file's `[providers.<name>]` (CONTRACT.md 1b) as adapters: those without a problem
    (every problem of the others is reported, with its place)."""
    table = _table(checker, value, "providers")
    if table is None:
        return {}
    described: dict[str, Adapter] = {}
    for name, item in table.items():
        adapter = _provider(checker, name, item, _key("providers", name))
        if adapter is not None:
            described[name] = adapter
    return described


def _provider(checker: _Checker, name: str, value: object, place: str) -> Adapter | None:
    table = _table(checker, value, place)
    if table is None:
        return None
    before = len(checker.problems)
    if not _PROVIDER_NAME.fullmatch(name):
        checker.add(
            place,
            "not a valid provider name: 1 to 64 of a-z0-9_- starting with a letter (its"
            " unmapped events are typed <name>.<provider type>)",
        )
    if _holds_unresolved(table):
        return None  # its unset variables are reported; the rest cannot be judged without them
    description, problems = parse_description(table, place)
    for problem_place, message in problems:
        checker.add(problem_place, message)
    if description is None or len(checker.problems) > before:
        return None
    if name in ADAPTERS:
        checker.warnings.append(
            f"{place}: replaces the built-in {name} adapter for every source that names it"
        )
    return described_adapter(name, description, "config")


def _holds_unresolved(value: object) -> bool:
    if isinstance(value, dict):
        return any(_holds_unresolved(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_unresolved(item) for item in value)
    return value is _UNRESOLVED


def _sources(
    checker: _Checker, value: object, adapters: Mapping[str, Adapter], broken: set[str]
) -> dict[str, SourceSettings] | None:
    if value is None:
        checker.add("sources", "no [sources.*]: nothing can be received")
        return None
    table = _table(checker, value, "sources")
    if table is None:
        return None
    if not table:
        checker.add("sources", "no [sources.*]: nothing can be received")
        return None

    def source(checker: _Checker, name: str, value: object, place: str) -> SourceSettings | None:
        return _source(checker, name, value, place, adapters, broken)

    return _each_named(checker, table, "sources", source)


def _each_named(
    checker: _Checker,
    table: Mapping[str, object],
    section: str,
    parse: Callable[[_Checker, str, object, str], T | None],
) -> dict[str, T] | None:
    """Every `[section.<name>]` table parsed; None if any of them has a problem (each one is
    still checked, so that every problem is reported)."""
    parsed: dict[str, T] = {}
    complete = True
    for name, item in table.items():
        value = parse(checker, name, item, _key(section, name))
        if value is None:
            complete = False
        else:
            parsed[name] = value
    return parsed if complete else None


def _source(
    checker: _Checker,
    name: str,
    value: object,
    place: str,
    adapters: Mapping[str, Adapter],
    broken: set[str],
) -> SourceSettings | None:
    table = _table(checker, value, place)
    if table is None:
        return None
    before = len(checker.problems)
    _name(checker, name, place, "source")
    _check_keys(checker, table, _SOURCE_KEYS, place)

    adapter = _adapter(checker, table, place, adapters, broken)
    secrets = _one_or_many(checker, table, place, "secret", "secrets")
    tokens = _one_or_many(checker, table, place, "token", "tokens")
    settings: dict[str, Any] = {}
    if "token_param" in table:
        token_param = _string(checker, table["token_param"], _key(place, "token_param"))
        if token_param is not None and not _QUERY_PARAMETER.fullmatch(token_param):
            checker.add(
                _key(place, "token_param"), "not a query parameter name: 1 to 64 of A-Za-z0-9._~-"
            )
        settings["token_param"] = token_param
    if "allow_ips" in table:
        settings["allow_ips"] = _networks(checker, table["allow_ips"], _key(place, "allow_ips"))
    if "tolerance_seconds" in table:
        settings["tolerance_seconds"] = _integer(
            checker, table["tolerance_seconds"], _key(place, "tolerance_seconds"), 1
        )
    if "currency" in table:
        settings["currency"] = _currency(checker, table["currency"], _key(place, "currency"))
    if "signature_header" in table:
        settings["signature_header"] = _header_name(
            checker, table["signature_header"], _key(place, "signature_header")
        )
    if "uri" in table:
        uri = _string(checker, table["uri"], _key(place, "uri"))
        if uri is not None and not _URI_REFERENCE.fullmatch(uri):
            checker.add(
                _key(place, "uri"),
                "not a URI reference (RFC 3986): spaces and other characters need %-encoding",
            )
        settings["uri"] = uri
    if "public_url" in table:
        settings["public_url"] = _public_url(
            checker, table["public_url"], _key(place, "public_url")
        )
    if "public_key" in table:
        settings["public_key"] = _public_key(
            checker, table["public_key"], _key(place, "public_key")
        )
    allow_unauthenticated = False
    if "allow_unauthenticated" in table:
        allow_unauthenticated = bool(
            _boolean(checker, table["allow_unauthenticated"], _key(place, "allow_unauthenticated"))
        )

    if adapter is not None:
        _check_authentication(checker, table, place, name, adapter, allow_unauthenticated)
        _check_key_forms(checker, adapter, secrets, settings.get("public_key"), place)
    if len(checker.problems) > before or adapter is None:
        return None
    return SourceSettings(
        name=name,
        adapter=adapter.name,
        secrets=tuple(Secret(secret) for _, secret in secrets),
        tokens=tuple(Secret(token) for _, token in tokens),
        allow_unauthenticated=allow_unauthenticated,
        **settings,
    )


def _adapter(
    checker: _Checker,
    table: Mapping[str, object],
    place: str,
    adapters: Mapping[str, Adapter],
    broken: set[str],
) -> Adapter | None:
    """The adapter a source names: a built-in, a preset or one of the file's `[providers.*]`
    (a `broken` one, whose problems are reported, is known but not usable)."""
    names = sorted({*adapters, *broken})
    known = ", ".join(names)
    adapter_place = _key(place, "adapter")
    if "adapter" not in table:
        checker.add(adapter_place, f"required: one of {known}")
        return None
    name = _string(checker, table["adapter"], adapter_place)
    if name is None or name in broken:
        return None
    adapter = adapters.get(name)
    if adapter is None:
        checker.add(
            adapter_place,
            f"unknown adapter {checker.show(adapter_place, name)}"
            f"{did_you_mean(name, names)} (known: {known}; or describe it in"
            " [providers.<name>])",
        )
    return adapter


def _check_authentication(
    checker: _Checker,
    table: Mapping[str, object],
    place: str,
    name: str,
    adapter: Adapter,
    allow_unauthenticated: bool,
) -> None:
    """CONTRACT.md 1a: what each kind of source needs, and what it cannot use. A described
    provider is held to the same rules: only `scheme = "none"` goes without a signature, and
    then the source needs a token or an allow-list as any unsigned one does."""
    has_secret = "secret" in table or "secrets" in table
    has_token = "token" in table or "tokens" in table
    has_allowlist = "allow_ips" in table and table["allow_ips"] != []
    if "signature_header" in table and adapter.name != "finexer":
        checker.add(
            _key(place, "signature_header"),
            f"only finexer sources read signature_header; {adapter.name} does not",
        )
    _check_public_url(checker, table, place, name, adapter)
    if adapter.scheme == "public_key":
        _check_public_key_source(checker, table, place, adapter, allow_unauthenticated)
        return
    if "public_key" in table:
        checker.add(
            _key(place, "public_key"),
            f"{adapter.name} does not verify with a public key ({adapter.scheme}): remove it",
        )
    if adapter.signed:
        if not has_secret:
            checker.add(
                _key(place, "secret"),
                f"required: {adapter.name} signs its webhooks"
                " (or secrets = [...] during a rotation)",
            )
        if allow_unauthenticated:
            checker.add(
                _key(place, "allow_unauthenticated"),
                f"{adapter.name} signs its webhooks: every request is verified",
            )
        return
    if has_secret:
        checker.add(
            _key(place, "secrets" if "secrets" in table else "secret"),
            f"{adapter.name} does not sign its webhooks; use token or allow_ips",
        )
    if allow_unauthenticated:
        if has_token or has_allowlist:
            checker.add(
                _key(place, "allow_unauthenticated"),
                "contradicts token/allow_ips: requests are authenticated; remove one of them",
            )
        else:
            checker.warnings.append(
                f"source {name} accepts unauthenticated requests (allow_unauthenticated = true):"
                f" anyone who can reach POST /webhooks/{name} can inject events"
            )
    elif not (has_token or has_allowlist):
        checker.add(
            place,
            f"{adapter.name} does not sign its webhooks: set token and/or allow_ips"
            " (or allow_unauthenticated = true to accept anyone)",
        )


def _check_key_forms(
    checker: _Checker,
    adapter: Adapter,
    secrets: list[tuple[str, str]],
    public_key: str | None,
    place: str,
) -> None:
    """A described provider's (or preset's) key must be of the form its scheme reads: base64
    for `key = "base64"`, `whsec_...` for Standard Webhooks, an Ed25519 key for `ed25519`.
    Otherwise every request would be refused, and only the 401s would say so."""
    # A described adapter's check is a bound method of its scheme: the scheme says the form.
    scheme = getattr(adapter.check_signature, "__self__", None)
    if isinstance(scheme, HmacScheme | StandardWebhooksScheme):
        form = scheme.key if isinstance(scheme, HmacScheme) else "whsec"
        for secret_place, secret in secrets:
            problem = secret_problem(secret, form)
            if problem is not None:  # it names the form, never the secret
                checker.add(secret_place, problem)
    elif isinstance(scheme, PublicKeyScheme) and public_key is not None:
        problem = public_key_problem(public_key, scheme.algorithm)
        if problem is not None:
            checker.add(_key(place, "public_key"), problem)


def _check_public_url(
    checker: _Checker, table: Mapping[str, object], place: str, name: str, adapter: Adapter
) -> None:
    """A provider that signs the URL it posts to (`{url}` in `signed`, Square's scheme) cannot
    be verified without it: the gateway behind a proxy never sees that URL itself."""
    if adapter.signs_url and "public_url" not in table:
        checker.add(
            _key(place, "public_url"),
            f"required: {adapter.name} signs the URL it posts to; give it as the provider"
            f" calls it (e.g. https://hooks.example.com/webhooks/{name})",
        )
    elif "public_url" in table and not adapter.signs_url:
        checker.add(
            _key(place, "public_url"),
            f"{adapter.name} does not sign the URL it posts to: remove it",
        )


def _check_public_key_source(
    checker: _Checker,
    table: Mapping[str, object],
    place: str,
    adapter: Adapter,
    allow_unauthenticated: bool,
) -> None:
    """A `public_key` scheme verifies with the provider's public key, never with a secret."""
    if "public_key" not in table:
        checker.add(
            _key(place, "public_key"),
            f"required: {adapter.name} signs with the provider's private key; give the"
            " provider's public key (PEM)",
        )
    if "secret" in table or "secrets" in table:
        checker.add(
            _key(place, "secrets" if "secrets" in table else "secret"),
            f"{adapter.name} verifies with a public key, not a secret: set public_key instead",
        )
    if allow_unauthenticated:
        checker.add(
            _key(place, "allow_unauthenticated"),
            f"{adapter.name} signs its webhooks: every request is verified",
        )


def _public_url(checker: _Checker, value: object, place: str) -> str | None:
    """An absolute http(s) URL. Never quoted in a message: it may carry a token."""
    text = _string(checker, value, place)
    if text is None:
        return None
    parts = _split_url(checker, text, place)
    if parts is None:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        checker.add(
            place,
            "expected an absolute http:// or https:// URL: the URL as the provider calls it",
        )
        return None
    return text


def _public_key(checker: _Checker, value: object, place: str) -> str | None:
    """A PEM public key (SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`) that loads."""
    text = _string(checker, value, place)
    if text is None:
        return None
    # Imported here: only a source with a public key needs it.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(text.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        checker.add(
            place,
            "not a PEM public key: expected -----BEGIN PUBLIC KEY----- (base64)"
            " -----END PUBLIC KEY-----",
        )
        return None
    return text


# Three letters is the shape of an ISO 4217 code, so a three-letter code outside the table is
# far likelier a typo ("XYZ", "GPB") than an asset; these crypto tickers are the exceptions.
# Longer or shorter tickers (USDT, USDC) are kept as given, as the money module keeps them.
_THREE_LETTER_TICKERS = frozenset(
    {"ADA", "BNB", "BTC", "DAI", "DOT", "ETH", "LTC", "SOL", "TRX", "XLM", "XRP"}
)


def _currency(checker: _Checker, value: object, place: str) -> str | None:
    text = _string(checker, value, place)
    if text is None:
        return None
    try:
        code = normalize_currency_code(text)
    except MoneyError:
        checker.add(place, f'not a currency code: {checker.show(place, text)} (e.g. "GBP")')
        return None
    if len(code) == 3 and code not in CURRENCY_EXPONENTS and code not in _THREE_LETTER_TICKERS:
        checker.add(
            place,
            f"not an ISO 4217 currency code: {checker.show(place, text)}{_closest_currency(code)}",
        )
        return None
    return code


def _closest_currency(code: str) -> str:
    """Codes two neighbouring letters apart (GPB), else one letter apart (EUA): typos."""
    codes = [other for other in sorted(CURRENCY_EXPONENTS) if len(other) == len(code)]
    swaps = {code[:i] + code[i + 1] + code[i] + code[i + 2 :] for i in range(len(code) - 1)}
    swapped = [other for other in codes if other in swaps]
    one_off = [
        other for other in codes if sum(a != b for a, b in zip(other, code, strict=True)) == 1
    ]
    closest = (swapped or one_off)[:3]
    if not closest:
        return ""
    return " (did you mean " + " or ".join(f'"{other}"' for other in closest) + "?)"


def _header_name(checker: _Checker, value: object, place: str) -> str | None:
    text = _string(checker, value, place)
    if text is None:
        return None
    if not _HEADER_NAME.fullmatch(text):
        checker.add(place, "not an HTTP header name (RFC 9110 token characters only)")
        return None
    return text.lower()


def _subscribers(checker: _Checker, value: object) -> dict[str, SubscriberConfig] | None:
    table = _table(checker, value, "subscribers")
    if table is None:
        return None
    return _each_named(checker, table, "subscribers", _subscriber)


def _subscriber(checker: _Checker, name: str, value: object, place: str) -> SubscriberConfig | None:
    table = _table(checker, value, place)
    if table is None:
        return None
    before = len(checker.problems)
    _name(checker, name, place, "subscriber")
    kind = _choice(checker, table.get("kind", "http"), _key(place, "kind"), "kind", _KINDS)
    _check_subscriber_keys(checker, table, kind, place)
    settings: dict[str, Any] = {} if kind is None else _KIND_SETTINGS[kind](checker, table, place)
    secrets = _one_or_many(checker, table, place, "secret", "secrets")
    for secret_place, secret in secrets:
        _subscriber_secret(checker, secret, secret_place)
    if kind == "http" and "secret" not in table and "secrets" not in table:
        checker.add(
            _key(place, "secret"),
            "required for an http subscriber: whsec_<base64>, so it can verify what it receives",
        )
    if "timeout_seconds" in table:
        settings["timeout_seconds"] = _seconds(
            checker,
            table["timeout_seconds"],
            _key(place, "timeout_seconds"),
            zero_ok=False,
            highest=_MAX_TIMEOUT,
        )
    if "retry_schedule" in table:
        settings["retry_schedule"] = _retry_schedule(
            checker, table["retry_schedule"], _key(place, "retry_schedule")
        )
    if "max_in_flight" in table:
        settings["max_in_flight"] = _integer(
            checker, table["max_in_flight"], _key(place, "max_in_flight"), 1, _MAX_IN_FLIGHT
        )
    if "circuit_breaker_failures" in table:
        settings["circuit_breaker_failures"] = _integer(
            checker,
            table["circuit_breaker_failures"],
            _key(place, "circuit_breaker_failures"),
            0,
            _MAX_CIRCUIT_FAILURES,
        )
    if "circuit_breaker_seconds" in table:
        settings["circuit_breaker_seconds"] = _seconds(
            checker,
            table["circuit_breaker_seconds"],
            _key(place, "circuit_breaker_seconds"),
            zero_ok=False,
            highest=_MAX_RETRY_DELAY,
        )
    if "ordering" in table:
        settings["ordering"] = _choice(
            checker, table["ordering"], _key(place, "ordering"), "ordering", _ORDERINGS
        )
    if len(checker.problems) > before or kind is None:
        return None
    return _SUBSCRIBER_TYPES[kind](
        name=name,
        secrets=tuple(Secret(secret) for _, secret in secrets),
        **settings,
    )


def _choice(
    checker: _Checker, value: object, place: str, what: str, choices: tuple[Choice, ...]
) -> Choice | None:
    """One of `choices`, spelled exactly; else the problem, with the closest and the list."""
    text = _string(checker, value, place)
    if text is None:
        return None
    for choice in choices:
        if text == choice:
            return choice
    checker.add(
        place,
        f"unknown {what} {checker.show(place, text)}{did_you_mean(text, choices)}"
        f" (supported: {', '.join(choices)})",
    )
    return None


def _check_subscriber_keys(
    checker: _Checker, table: Mapping[str, object], kind: SubscriberKind | None, place: str
) -> None:
    """Unknown keys, and keys of another kind (`stream` on an amqp subscriber)."""
    all_keys = dict.fromkeys(_SUBSCRIBER_KEYS + tuple(k for ks in _KIND_KEYS.values() for k in ks))
    own = _SUBSCRIBER_KEYS + (_KIND_KEYS[kind] if kind is not None else tuple(all_keys))
    for key in table:
        if key in own:
            continue
        if key in all_keys:
            owners = [other for other in _KINDS if key in _KIND_KEYS[other]]
            listed = ", ".join(owners[:-1]) + " and " + owners[-1] if len(owners) > 1 else owners[0]
            checker.add(_key(place, key), f"only {listed} subscribers have a {key}")
        else:
            checker.add(_key(place, key), f"unknown key{did_you_mean(key, own)}")


def _http_settings(checker: _Checker, table: Mapping[str, object], place: str) -> dict[str, Any]:
    return {"url": _http_url(checker, table, place)}


def _file_settings(checker: _Checker, table: Mapping[str, object], place: str) -> dict[str, Any]:
    return {"path": _file_path(checker, table, place)}


def _redis_settings(checker: _Checker, table: Mapping[str, object], place: str) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "url": _broker_url(checker, table, place, "redis"),
        "stream": _required_string(checker, table, place, "stream", "redis"),
    }
    if "maxlen" in table:
        # MAXLEN ~ keeps at least this many entries; 0 would empty the stream on every XADD.
        settings["maxlen"] = _integer(checker, table["maxlen"], _key(place, "maxlen"), 1)
    return settings


def _nats_settings(checker: _Checker, table: Mapping[str, object], place: str) -> dict[str, Any]:
    subject = _required_string(checker, table, place, "subject", "nats")
    if subject is not None:
        # JetStream publishes to one subject: `*` and `>` subscribe, they do not address.
        problem = template_problem(subject, "*>", empty_parts=False)
        if problem is not None:
            checker.add(_key(place, "subject"), problem)
    return {"url": _broker_url(checker, table, place, "nats"), "subject": subject}


def _amqp_settings(checker: _Checker, table: Mapping[str, object], place: str) -> dict[str, Any]:
    settings: dict[str, Any] = {"url": _broker_url(checker, table, place, "amqp")}
    key_place = _key(place, "routing_key")
    if "routing_key" not in table:
        checker.add(key_place, 'required for an amqp subscriber (e.g. "{type}"; "" for fanout)')
    elif not isinstance(table["routing_key"], str):
        _string(checker, table["routing_key"], key_place)  # reports the type
    else:
        routing_key: str = table["routing_key"]
        # `*` and `#` are binding patterns; a published routing key with one is a typo.
        problem = template_problem(routing_key, "*#", empty_parts=True)
        if problem is None and len(routing_key.encode()) > _AMQP_MAX_ROUTING_KEY_BYTES:
            problem = f"at most {_AMQP_MAX_ROUTING_KEY_BYTES} bytes"
        if problem is not None:
            checker.add(key_place, problem)
        settings["routing_key"] = routing_key
    if "exchange" in table:
        exchange_place = _key(place, "exchange")
        exchange = table["exchange"]
        if not isinstance(exchange, str):
            _string(checker, exchange, exchange_place)  # reports the type
        elif not _AMQP_EXCHANGE.fullmatch(exchange):
            checker.add(
                exchange_place,
                'not an exchange name: up to 127 of A-Za-z0-9_.:- ("" is the default exchange)',
            )
        else:
            settings["exchange"] = exchange
    return settings


_KIND_SETTINGS: Mapping[
    SubscriberKind, Callable[[_Checker, Mapping[str, object], str], dict[str, Any]]
] = {
    "http": _http_settings,
    "file": _file_settings,
    "redis": _redis_settings,
    "nats": _nats_settings,
    "amqp": _amqp_settings,
}
_SUBSCRIBER_TYPES: Mapping[SubscriberKind, type[SubscriberConfig]] = {
    "http": HttpSubscriber,
    "file": FileSubscriber,
    "redis": RedisSubscriber,
    "nats": NatsSubscriber,
    "amqp": AmqpSubscriber,
}


def _required_string(
    checker: _Checker, table: Mapping[str, object], place: str, key: str, kind: str
) -> str | None:
    if key not in table:
        checker.add(
            _key(place, key), f"required for a{'n' if kind[0] in 'aeiou' else ''} {kind} subscriber"
        )
        return None
    return _string(checker, table[key], _key(place, key))


def _broker_url(
    checker: _Checker, table: Mapping[str, object], place: str, kind: SubscriberKind
) -> BrokerUrl | None:
    """A broker URL of one of the kind's schemes, with a host. Never quoted in a message: it
    may carry a password."""
    expected = " or ".join(f"{scheme}://" for scheme in _BROKER_SCHEMES[kind])
    article = "an" if kind[0] in "aeiou" else "a"
    parsed = _parsed_url(
        checker, table, place, f"required for {article} {kind} subscriber: {expected}..."
    )
    if parsed is None:
        return None
    url, parts = parsed
    url_place = _key(place, "url")
    if parts.scheme not in _BROKER_SCHEMES[kind]:
        checker.add(url_place, f"expected a {expected} URL")
        return None
    if not parts.hostname:
        checker.add(url_place, "the URL has no host")
        return None
    if kind == "redis" and parts.path not in ("", "/") and not parts.path[1:].isdigit():
        checker.add(url_place, "the database (the URL's path) is a number, e.g. /0")
        return None
    return BrokerUrl(url)


def _parsed_url(
    checker: _Checker, table: Mapping[str, object], place: str, missing: str
) -> tuple[str, SplitResult] | None:
    """The subscriber's `url` and its parts, or None with the problem noted (`missing` when
    there is none). Never quoted in a message: a URL may carry credentials or a token."""
    url_place = _key(place, "url")
    if "url" not in table:
        checker.add(url_place, missing)
        return None
    url = _string(checker, table["url"], url_place)
    if url is None:
        return None
    parts = _split_url(checker, url, url_place)
    return None if parts is None else (url, parts)


def _split_url(checker: _Checker, url: str, place: str) -> SplitResult | None:
    """`url`'s parts, or None with the problem noted (never quoting the URL)."""
    if any(character.isspace() or ord(character) < 32 for character in url):
        checker.add(place, "not a URL: it contains whitespace or control characters")
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises on a bad one
    except ValueError as error:
        checker.add(place, f"not a URL: {_url_error(error)}")
        return None
    return parts


def _http_url(checker: _Checker, table: Mapping[str, object], place: str) -> str | None:
    parsed = _parsed_url(
        checker, table, place, 'required for an http subscriber (kind = "http" is the default)'
    )
    if parsed is None:
        return None
    url, parts = parsed
    url_place = _key(place, "url")
    if parts.scheme not in ("http", "https"):
        checker.add(url_place, "expected an http:// or https:// URL")
        return None
    if not parts.hostname:
        checker.add(url_place, "the URL has no host")
        return None
    return url


def _url_error(error: ValueError) -> str:
    # urllib's messages may quote the URL; say what kind of problem it is and no more.
    text = str(error)
    if "port" in text.lower():
        return "the port is not a number from 0 to 65535"
    if "ipv6" in text.lower():
        return "a malformed IPv6 address"
    return "it cannot be parsed"


def _file_path(checker: _Checker, table: Mapping[str, object], place: str) -> Path | None:
    path_place = _key(place, "path")
    if "path" not in table:
        checker.add(path_place, "required for a file subscriber")
        return None
    text = _string(checker, table["path"], path_place)
    if text is None:
        return None
    if "\x00" in text:
        checker.add(path_place, "a path cannot contain a NUL character")
        return None
    # Relative paths stay relative: to the working directory, as the store's are.
    return Path(text)


def _subscriber_secret(checker: _Checker, secret: str, place: str) -> None:
    """A Standard Webhooks signing secret: `whsec_` and the base64 of at least 16 bytes (v1), or
    `whsk_` and an Ed25519 key (v1a)."""
    if secret.startswith(_SIGNING_KEY_PREFIX):
        try:
            decode_signing_secret(secret)
        except ValueError as error:  # the message names no part of the key
            checker.add(place, str(error))
        return
    if not secret.startswith(_WEBHOOK_SECRET_PREFIX):
        checker.add(place, "expected whsec_ followed by base64 (a Standard Webhooks secret)")
        return
    try:
        key = base64.b64decode(secret.removeprefix(_WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        checker.add(place, "the part after whsec_ is not valid base64")
        return
    if len(key) < _MIN_WEBHOOK_KEY_BYTES:
        checker.add(
            place,
            f"the key after whsec_ is too short: at least {_MIN_WEBHOOK_KEY_BYTES} bytes"
            " (base64 of random bytes)",
        )


def _retry_schedule(checker: _Checker, value: object, place: str) -> tuple[float, ...] | None:
    items = _array(checker, value, place)
    if items is None:
        return None
    if len(items) > _MAX_RETRIES:
        checker.add(place, f"at most {_MAX_RETRIES} retries, not {len(items)}")
    # Every delay is checked even when there are too many: the fix may be to both.
    delays = [
        _seconds(checker, item, _index(place, number), zero_ok=True, highest=_MAX_RETRY_DELAY)
        for number, item in enumerate(items)
    ]
    return tuple(delay for delay in delays if delay is not None)


def _routes(
    checker: _Checker,
    value: object,
    defined_sources: list[str],
    defined_subscribers: list[str],
    adapter_names: list[str],
) -> tuple[RouteConfig, ...] | None:
    if isinstance(value, dict):
        checker.add("routes", "expected an array of tables: write [[routes]], not [routes]")
        return None
    items = _array(checker, value, "routes")
    if items is None:
        return None
    routes: list[RouteConfig] = []
    complete = True
    for number, item in enumerate(items):
        route = _route(
            checker,
            item,
            _index("routes", number),
            defined_sources,
            defined_subscribers,
            adapter_names,
        )
        if route is None:
            complete = False
        else:
            routes.append(route)
    return tuple(routes) if complete else None


def _route(
    checker: _Checker,
    value: object,
    place: str,
    defined_sources: list[str],
    defined_subscribers: list[str],
    adapter_names: list[str],
) -> RouteConfig | None:
    table = _table(checker, value, place)
    if table is None:
        return None
    before = len(checker.problems)
    _check_keys(checker, table, _ROUTE_KEYS, place)
    sources = None
    if "sources" in table:
        # An empty list would match nothing; "all sources" is said by leaving the key out.
        sources = _references(
            checker,
            table["sources"],
            _key(place, "sources"),
            "source",
            defined_sources,
            "must not be an empty array (leave sources out to match every source)",
        )
    types = None
    if "types" in table:
        types = _type_patterns(checker, table["types"], _key(place, "types"), adapter_names)
    subscribers: list[tuple[str, str]] | None = None
    if "subscribers" not in table:
        checker.add(_key(place, "subscribers"), "required: the subscribers this route sends to")
    else:
        subscribers = _references(
            checker,
            table["subscribers"],
            _key(place, "subscribers"),
            "subscriber",
            defined_subscribers,
            "must not be an empty array: a route sends to at least one subscriber",
        )
    if len(checker.problems) > before or subscribers is None:
        return None
    return RouteConfig(
        sources=None if sources is None else tuple(name for _, name in sources),
        types=None if types is None else tuple(pattern for _, pattern in types),
        subscribers=tuple(name for _, name in subscribers),
    )


def _type_patterns(
    checker: _Checker, value: object, place: str, adapter_names: list[str]
) -> list[tuple[str, str]] | None:
    """Glob patterns on the canonical type (fnmatch: `payment.*`, `transfer.succeeded`, `*`)."""
    items = _array(checker, value, place)
    if items is None:
        return None
    if not items:
        checker.add(place, "must not be an empty array (leave types out to match every type)")
        return None
    patterns: list[tuple[str, str]] = []
    for number, item in enumerate(items):
        item_place = _index(place, number)
        pattern = _string(checker, item, item_place)
        if pattern is None:
            continue
        if any(character.isspace() for character in pattern):
            checker.add(item_place, 'a type pattern has no whitespace (e.g. "payment.*")')
            continue
        if not _may_match_a_type(pattern, adapter_names):
            checker.warnings.append(
                f"{item_place}: {checker.show(item_place, pattern)} matches no event type"
                f"{_closest_types(pattern)}"
            )
        patterns.append((item_place, pattern))
    return patterns


def _may_match_a_type(pattern: str, adapter_names: list[str]) -> bool:
    """Whether some event could have a type the glob matches: a canonical type, any action of
    an open kind (`workflow.*`), or an unmapped `<adapter>.<provider type>`, whose provider
    types nobody can list in advance."""
    if any(fnmatchcase(name, pattern) for name in CANONICAL_TYPES):
        return True
    head = pattern.partition(".")[0]
    return any(fnmatchcase(prefix, head) for prefix in (*adapter_names, *OPEN_KINDS))


def _closest_types(pattern: str) -> str:
    names = sorted(CANONICAL_TYPES | {f"{kind}.*" for kind in KINDS})
    closest = difflib.get_close_matches(pattern, names, n=3, cutoff=0.6)
    if not closest:
        return " (canonical types are <kind>.<action>, e.g. payment.succeeded)"
    return " (closest: " + ", ".join(json.dumps(name) for name in closest) + ")"


def _references(
    checker: _Checker, value: object, place: str, what: str, defined: list[str], empty: str
) -> list[tuple[str, str]] | None:
    """Names of sources or subscribers the file defines."""
    names = _strings(checker, value, place, empty)
    if names is None:
        return None
    for name_place, name in names:
        if name not in defined:
            checker.add(
                name_place,
                f"no {what} named {checker.show(name_place, name)}{did_you_mean(name, defined)}",
            )
    return names


def _warn_unrouted(
    checker: _Checker, routes: tuple[RouteConfig, ...], defined_subscribers: list[str]
) -> None:
    if not routes:
        checker.warnings.append("no [[routes]]: events are stored but sent to no subscriber")
        return
    routed = {name for route in routes for name in route.subscribers}
    for name in defined_subscribers:
        if name not in routed:
            checker.warnings.append(f"subscriber {name} is named by no route: it receives nothing")


def worker_count(server: ServerConfig) -> int:
    """How many processes serve the port: `server.workers`, or one per CPU when "auto"."""
    return _per_cpu_unless(server.workers)


def _per_cpu_unless(count: int | None) -> int:
    if count is not None:
        return count
    return max(1, min(os.cpu_count() or 1, AUTO_WORKERS_MAX))

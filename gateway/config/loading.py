"""Reading the file: TOML, `${NAME}` from the environment, then each section into its types
(gateway/config/types.py, gateway/delivery/settings/, adapters/source.py, gateway/routing.py;
`[providers.*]` by adapters/described/) with adapters/toml_tables.py, and by hand only what no
one value's type can say: names that refer to other sections, adapters' rules for their
sources, file subscribers' directories, route globs that match nothing.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.base import Adapter
from adapters.described import described_adapters
from adapters.places import did_you_mean, toml_kind
from adapters.places import dotted as key_place
from adapters.registry import ADAPTERS, shipped_adapters
from adapters.source import SourceSettings
from adapters.toml_tables import UNRESOLVED, Checker, table_fields, unknown_keys
from gateway.config.types import (
    AUTO,
    MIN_ADMIN_TOKEN_LENGTH,
    NAME,
    AdminConfig,
    ConfigError,
    ConfigProblem,
    GatewayConfig,
    ServerConfig,
    StoreConfig,
)
from gateway.delivery.registry import KEYS, KINDS
from gateway.delivery.settings import SubscriberConfig, article
from gateway.delivery.settings.file import path_problem
from gateway.routing import RouteConfig, unmatched_type_pattern
from gateway.store.url import SQLITE_PREFIX

__all__ = ["load_config"]

_SECTIONS = ("server", "store", "providers", "sources", "subscribers", "routes", "admin")
# Keys earlier versions took, with what to do instead: a config written for them gets this,
# not a bare "unknown key". The writer process and its deliver processes are gone: every
# process of `gateway serve` stores and delivers, on SQLite as on PostgreSQL.
_REMOVED_KEYS = {
    "server.deliver_processes": "removed: every worker process delivers now; set"
    " server.workers instead",
    "server.deliver_nice": "removed: there are no deliver processes any more; delete the line",
    "store.writer": "removed: every worker process opens the store itself now; delete the line",
}
_MIN_ADMIN_TOKEN_DISTINCT = 6
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, interpolate and validate the file at `path`; raise ConfigError listing every problem.

    `environ` replaces `${NAME}` (default: os.environ).
    """
    checker = Checker()
    document = _read_document(checker, path)
    config = None
    if document is not None:
        tree = _interpolate(checker, document, "", os.environ if environ is None else environ)
        config = _gateway(checker, tree)
    if checker.problems or config is None:
        raise ConfigError([ConfigProblem(place, message) for place, message in checker.problems])
    return config


def _read_document(checker: Checker, path: Path) -> dict[str, Any] | None:
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


def _interpolate(checker: Checker, value: Any, place: str, environ: Mapping[str, str]) -> Any:
    """`value` with `${NAME}` replaced in every string; an unset NAME leaves UNRESOLVED."""
    if isinstance(value, dict):
        return {k: _interpolate(checker, v, key_place(place, k), environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(checker, v, f"{place}[{n}]", environ) for n, v in enumerate(value)]
    names = _ENV_REFERENCE.findall(value) if isinstance(value, str) else []
    if not names:
        return value
    missing = [name for name in dict.fromkeys(names) if name not in environ]
    for name in missing:
        checker.add(place, f"environment variable {name} is not set")
    if missing:
        return UNRESOLVED
    checker.from_environment[place] = list(dict.fromkeys(names))
    # One pass: a value that itself contains `${...}` is not expanded again.
    return _ENV_REFERENCE.sub(lambda match: environ[match.group(1)], value)


def _table(checker: Checker, value: object, place: str) -> dict[str, Any] | None:
    if value is UNRESOLVED:
        return None
    if not isinstance(value, dict):
        checker.add(place, f"expected a table, got {toml_kind(value)}")
        return None
    return value


def _removed(place: str) -> Any:
    return lambda key: _REMOVED_KEYS.get(key_place(place, key))


def _name(checker: Checker, name: str, place: str, what: str) -> None:
    if not NAME.fullmatch(name):
        checker.add(
            place,
            f"not a valid {what} name: 1 to 64 of A-Za-z0-9._- starting with a letter or digit"
            " (it appears in URLs and event ids)",
        )


def _gateway(checker: Checker, document: dict[str, Any]) -> GatewayConfig | None:
    for key in document:
        if key not in _SECTIONS:
            checker.add(key_place("", key), f"unknown section{did_you_mean(key, _SECTIONS)}")
    server = _section(checker, document.get("server", {}), "server", ServerConfig)
    store = _section(checker, document.get("store", {}), "store", StoreConfig)
    described = described_adapters(checker, document.get("providers", {}), "providers")
    for name in [name for name in described if name in ADAPTERS]:
        checker.warnings.append(
            f"providers.{name}: replaces the built-in {name} adapter for every source that names it"
        )
    adapters = {**shipped_adapters(), **described}
    # Described but not usable (their problems are reported): a source naming one has no
    # "unknown adapter" besides.
    broken = set(_names_in(document.get("providers"))) - set(described)
    sections: dict[str, Any] = {
        "server": server,
        "store": store,
        "sources": _sources(checker, document.get("sources"), adapters, broken),
        "subscribers": _named(
            checker,
            document.get("subscribers", {}),
            "subscribers",
            lambda checker, name, value, place: _subscriber(checker, name, value, place, store),
        ),
        "routes": _routes(checker, document, [*adapters, *broken]),
        "admin": _admin(checker, document.get("admin", {})),
    }
    if None in sections.values():
        return None
    return GatewayConfig(**sections, adapters=adapters, warnings=tuple(checker.warnings))


def _names_in(section: object) -> list[str]:
    """The names a section defines, valid or not: a route naming one is not also wrong."""
    return list(section) if isinstance(section, dict) else []


def _fields(
    checker: Checker, value: object, place: str, struct: Any, **options: Any
) -> dict[str, Any] | None:
    """The table `value` as `struct`'s fields (`table_fields`); None if it has a problem."""
    table = _table(checker, value, place)
    if table is None:
        return None
    before = len(checker.problems)
    values = table_fields(checker, table, struct, place, **options)
    return values if len(checker.problems) == before else None


def _section(checker: Checker, value: object, place: str, struct: Any) -> Any:
    if place == "server" and isinstance(value, dict) and value.get("workers") == AUTO:
        value = {key: item for key, item in value.items() if key != "workers"}
    values = _fields(checker, value, place, struct, skip=(), unknown=_removed(place))
    return None if values is None else struct(**values)


def _named(checker: Checker, value: object, section: str, read: Any) -> dict[str, Any] | None:
    """Every `[section.<name>]` read; None if any of them has a problem (each one is still
    read, so that every problem is reported)."""
    table = _table(checker, value, section)
    if table is None:
        return None
    before = len(checker.problems)
    read = {
        name: read(checker, name, item, key_place(section, name)) for name, item in table.items()
    }
    complete = len(checker.problems) == before and None not in read.values()
    return read if complete else None


def _sources(
    checker: Checker, value: object, adapters: Mapping[str, Adapter], broken: set[str]
) -> dict[str, SourceSettings] | None:
    if value is None or value == {}:
        checker.add("sources", "no [sources.*]: nothing can be received")
        return None
    names = sorted({*adapters, *broken})
    # The settings only some adapters read, and which (each adapter's `source_keys`).
    readers: dict[str, list[str]] = {}
    for adapter in adapters.values():
        for key in adapter.source_keys:
            readers.setdefault(key, []).append(adapter.name)

    def source(checker: Checker, name: str, value: object, place: str) -> SourceSettings | None:
        table = _table(checker, value, place)
        if table is None:
            return None
        before = len(checker.problems)
        _name(checker, name, place, "source")
        values = table_fields(
            checker,
            table,
            SourceSettings,
            place,
            aliases={"secret": "secrets", "token": "tokens"},
            required=lambda key: f"required: one of {', '.join(names)}",
        )
        chosen = values.get("adapter")
        adapter = adapters.get(chosen) if isinstance(chosen, str) else None
        if isinstance(chosen, str) and adapter is None and chosen not in broken:
            where = key_place(place, "adapter")
            checker.add(
                where,
                f"unknown adapter {checker.show(where, chosen)}{did_you_mean(chosen, names)}"
                f" (known: {', '.join(names)}; or describe it in [providers.<name>])",
            )
        if adapter is None:
            return None
        for key in [key for key in table if key in readers and key not in adapter.source_keys]:
            checker.add(
                key_place(place, key),
                f"only {' and '.join(readers[key])} sources read {key}; {adapter.name} does not",
            )
        for key, message in adapter.authentication_problems(table, name):
            checker.add(key_place(place, key) if key else place, message)
        if len(checker.problems) > before:
            return None
        settings = SourceSettings(name=name, **{**values, "adapter": adapter.name})
        for key, message in adapter.source_problems(settings):
            checker.add(key_place(place, key), message)
        if settings.allow_unauthenticated and not adapter.signed:
            checker.warnings.append(
                f"source {name} accepts unauthenticated requests (allow_unauthenticated = true):"
                f" anyone who can reach POST /webhooks/{name} can inject events"
            )
        return settings if len(checker.problems) == before else None

    return _named(checker, value, "sources", source)


def _subscriber(
    checker: Checker, name: str, value: object, place: str, store: StoreConfig | None
) -> SubscriberConfig | None:
    table = _table(checker, value, place)
    if table is None:
        return None
    before = len(checker.problems)
    _name(checker, name, place, "subscriber")
    kind = table.get("kind", "http")
    if not isinstance(kind, str) or kind not in KINDS:
        if kind is not UNRESOLVED:
            where = key_place(place, "kind")
            checker.add(where, _unknown_kind(checker, kind, where))
        # Its kind unknown, only keys of no kind can be judged.
        unknown_keys(checker, table, ["kind", "secret", *KEYS], place)
        return None
    settings = KINDS[kind].settings
    hints = settings.required_hints
    values = table_fields(
        checker,
        {key: item for key, item in table.items() if key != "kind"},
        settings,
        place,
        aliases={"secret": "secrets"},
        unknown=_elsewhere,
        required=lambda key: f"required for {article(kind)} subscriber{hints.get(key, '')}",
    )
    path = values.get("path")
    if isinstance(path, Path) and store is not None:  # a file subscriber's
        _check_directory(checker, path, f"subscribers.{name}.path", store)
    return settings(name=name, **values) if len(checker.problems) == before else None


def _elsewhere(key: str) -> str | None:
    """`stream` on an amqp subscriber: a key of another kind."""
    kinds = KEYS.get(key)
    if not kinds:
        return None
    listed = ", ".join(kinds[:-1]) + " and " + kinds[-1] if len(kinds) > 1 else kinds[0]
    return f"only {listed} subscribers have a {key}"


def _unknown_kind(checker: Checker, kind: object, place: str) -> str:
    if not isinstance(kind, str):
        return f"expected a string, got {toml_kind(kind)}"
    if not kind:
        return "must not be empty"
    return checker.not_a_choice(place, kind, tuple(KINDS))


def _check_directory(checker: Checker, path: Path, place: str, store: StoreConfig) -> None:
    """What `gateway serve` refuses to start over (gateway/preflight.py), said by check-config
    first: a missing directory is a problem; one not writable a warning (a config is often
    checked as another user than serve runs as). A directory the SQLite store makes when it
    opens (./data for the default config) is not missing: serve opens the store first."""
    problem = path_problem(path)
    missing = problem is not None and not path.parent.is_dir()
    database = store.url.reveal()
    if missing and database.startswith(SQLITE_PREFIX):
        made_by_store = Path(os.path.abspath(database.removeprefix(SQLITE_PREFIX))).parents
        if Path(os.path.abspath(path.parent)) in made_by_store:
            return
    if missing:
        checker.add(
            place,
            f"{problem} (relative paths are from the working directory): serve will refuse to"
            " start",
        )
    elif problem:
        checker.warnings.append(f"{place}: {problem}: serve will refuse to start")


def _routes(
    checker: Checker, document: Mapping[str, Any], adapter_names: list[str]
) -> tuple[RouteConfig, ...] | None:
    value = document.get("routes", [])
    if isinstance(value, dict):
        checker.add("routes", "expected an array of tables: write [[routes]], not [routes]")
        return None
    if not isinstance(value, list):
        checker.add("routes", f"expected an array, got {toml_kind(value)}")
        return None
    defined = {
        "sources": _names_in(document.get("sources")),
        "subscribers": _names_in(document.get("subscribers")),
    }
    before = len(checker.problems)
    routes: list[RouteConfig] = []
    for number, item in enumerate(value):
        place = f"routes[{number}]"
        table = _table(checker, item, place)
        if table is None:
            continue
        at_start = len(checker.problems)
        values = table_fields(
            checker, table, RouteConfig, place, skip=(), required=RouteConfig.required.__getitem__
        )
        for key, names in defined.items():
            for index, name in enumerate(_given(values, key)):
                where = f"{key_place(place, key)}[{index}]"
                if isinstance(name, str) and name not in names:
                    checker.add(
                        where,
                        f"no {key[:-1]} named {checker.show(where, name)}"
                        f"{did_you_mean(name, names)}",
                    )
        for index, pattern in enumerate(_given(values, "types")):
            where = f"{key_place(place, 'types')}[{index}]"
            unmatched = isinstance(pattern, str) and unmatched_type_pattern(pattern, adapter_names)
            if unmatched:
                checker.warnings.append(f"{where}: {checker.show(where, pattern)} {unmatched}")
        if len(checker.problems) == at_start:
            routes.append(RouteConfig(**values))
    if len(checker.problems) > before:
        return None
    routed = {name for route in routes for name in route.subscribers}
    if not routes:
        checker.warnings.append("no [[routes]]: events are stored but sent to no subscriber")
    for name in defined["subscribers"] if routes else ():
        if name not in routed:
            checker.warnings.append(f"subscriber {name} is named by no route: it receives nothing")
    return tuple(routes)


def _given(values: Mapping[str, Any], key: str) -> tuple[Any, ...]:
    """The items of an array that was read, or none (absent, or its problems reported)."""
    items = values.get(key)
    return items if isinstance(items, tuple) else ()


def _admin(checker: Checker, value: object) -> AdminConfig | None:
    values = _fields(checker, value, "admin", AdminConfig, skip=(), aliases={"token": "tokens"})
    if values is None:
        return None
    admin = AdminConfig(**values)
    for index, token in enumerate(admin.tokens):
        secret = token.reveal()
        if len(secret) < MIN_ADMIN_TOKEN_LENGTH or len(set(secret)) < _MIN_ADMIN_TOKEN_DISTINCT:
            # A warning, not a problem: a short token still works, and a test set-up may use
            # one. Never quoted: even a weak token is a secret.
            where = (
                "admin.token"
                if isinstance(value, dict) and "token" in value
                else f"admin.tokens[{index}]"
            )
            checker.warnings.append(
                f"{where}: too weak to keep the admin API closed (fewer than"
                f" {MIN_ADMIN_TOKEN_LENGTH} characters, or the same few repeated); use a random"
                " one, e.g. `openssl rand -hex 32`"
            )
    return admin

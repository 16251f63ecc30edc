"""The `gateway` command line (CONTRACT.md 6).

Each command is a small function of parsed arguments returning an exit code; argparse does the
rest. Exit codes: 0 done, 1 the command ran and found problems (the store unavailable, or its
schema newer than this gateway, included), 2 bad input or usage; `serve` also 3 (the app failed
to start: a store schema newer than this gateway is one case) and 4 (cannot listen on the
address).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import structlog

from adapters.base import Adapter
from adapters.described.samples import DescribedSamples
from adapters.errors import AdapterError
from adapters.presets import PRESETS
from adapters.registry import ADAPTERS
from adapters.samples import SampleError, known_types, sample_body
from adapters.source import SourceSettings
from gateway import __version__
from gateway.config import (
    AUTO,
    DEFAULT_CONFIG_PATH,
    MAX_WORKERS,
    ROLES,
    ConfigError,
    GatewayConfig,
    Role,
    load_config,
    shipped_adapters,
    worker_count,
)
from gateway.logs import configure_logging, flush_logs, log_uvicorn_records
from gateway.operations.dead_letters import DeadLetterItem, list_dead_letters, redrive
from gateway.operations.paging import MAX_LIMIT
from gateway.operations.quarantine import drop_quarantined, list_quarantine, quarantined_payload
from gateway.operations.replay import replay_event
from gateway.operations.subscribers import enable
from gateway.preflight import (
    PORT_WAIT_SECONDS,
    file_subscriber_problems,
    listen_when_free,
    store_problem,
)
from gateway.reprocess import reprocess_quarantine
from gateway.signing import new_secret, public_key_of
from gateway.store import Store, StoreSchemaError, StoreUnavailable, open_store
from schemas.event import CanonicalEvent, encode_event
from schemas.money import MoneyError, normalize_currency_code
from schemas.timestamps import TimestampError, parse_timestamp

__all__ = ["main"]

T = TypeVar("T")

log = structlog.get_logger("gateway")

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
# `gateway serve` only: the app failed to start (uvicorn's code for it), the address is taken.
EXIT_CANNOT_START = 3
EXIT_CANNOT_LISTEN = 4

# The names the one CLI is installed under (pyproject.toml's [project.scripts]): `finrelay` is
# what a user types after `pip install finrelay`, as the generic `gateway` may be taken on PATH.
PROGRAM_NAMES = ("gateway", "finrelay")
QUARANTINE_ACTIONS = ("show", "drop")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    return name.strip().lower(), value.strip()


def _currency(text: str) -> str:
    try:
        return normalize_currency_code(text)
    except MoneyError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _time(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except TimestampError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _error_line(code: str, detail: str) -> bytes:
    return msgspec.json.encode({"error": code, "detail": detail}) + b"\n"


def _unknown_adapter(name: str, adapters: Mapping[str, Adapter]) -> str:
    matches = difflib.get_close_matches(name, list(adapters), n=1)
    hint = f' (did you mean "{matches[0]}"?)' if matches else ""
    return f"no adapter named {name!r}{hint} (known: {', '.join(sorted(adapters))})"


def run_normalize(args: argparse.Namespace) -> int:
    """Print the canonical event a payload becomes (each one, for a batch provider); no
    signature check, and no config unless --config names one for its `[providers.*]`."""
    if args.config is None:
        adapters: Mapping[str, Adapter] = shipped_adapters()
    else:
        config = _load_or_report(args.config)
        if config is None:
            return EXIT_PROBLEMS
        adapters = config.adapters
    adapter = adapters.get(args.adapter)
    if adapter is None:
        sys.stderr.buffer.write(
            _error_line("unknown_adapter", _unknown_adapter(args.adapter, adapters))
        )
        return EXIT_USAGE
    try:
        body = sys.stdin.buffer.read() if args.file in (None, "-") else Path(args.file).read_bytes()
    except OSError as error:
        sys.stderr.buffer.write(_error_line("unreadable_file", f"{args.file}: {error.strerror}"))
        return EXIT_USAGE
    settings = SourceSettings(
        name=args.source or adapter.name, adapter=adapter.name, currency=args.currency
    )
    received_at = args.received_at or datetime.now(UTC)
    try:
        events = adapter.normalize_all(body, dict(args.header), settings, received_at, "none")
    except AdapterError as error:
        sys.stderr.buffer.write(_error_line(error.code, error.detail))
        return EXIT_USAGE
    for event in events:
        encoded = encode_event(event)
        # The exact bytes a subscriber would receive with --compact (one event a line);
        # indented for a person otherwise.
        output = encoded if args.compact else msgspec.json.format(encoded, indent=2)
        sys.stdout.buffer.write(output + b"\n")
    return EXIT_OK


def run_providers(args: argparse.Namespace) -> int:
    """List every adapter a source of the config may name: built-in, preset, or described in
    the config's `[providers.*]`, with its signature scheme."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    for name in sorted(config.adapters):
        adapter = config.adapters[name]
        if args.json:
            line = msgspec.json.encode(
                {"name": name, "origin": adapter.origin, "scheme": adapter.scheme}
            ).decode()
        else:
            line = f"{name}\t{adapter.origin}\t{adapter.scheme}"
        print(line)
    return EXIT_OK


def run_check_config(args: argparse.Namespace) -> int:
    """Validate a config file: every problem on its own line, with its place; exit 1 if any."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    for warning in config.warnings:
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    print(
        f"{args.config}: ok ({_plural(len(config.sources), 'source')},"
        f" {_plural(len(config.subscribers), 'subscriber')},"
        f" {_plural(len(config.routes), 'route')})"
    )
    return EXIT_OK


def _load_or_report(path: Path) -> GatewayConfig | None:
    try:
        return load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return None


def run_serve(args: argparse.Namespace) -> int:
    """Run the gateway until SIGINT or SIGTERM: ingress, delivery, health and metrics.

    Exit 0 after a clean stop, 1 when the config or a start-up check fails, 3 when the app
    fails to start (its log says why), 4 when the address cannot be listened on.
    """
    # A stop asked for while it still waits for the port or the store is a clean stop too
    # (exit 0), not a death by SIGTERM: serving, uvicorn installs handlers of its own.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run_serve(args)
    except KeyboardInterrupt:
        log.info("stopped", before="serving")
        flush_logs()
        return EXIT_OK


def _run_serve(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    server = config.server
    if any(option is not None for option in (args.host, args.port, args.workers, args.role)):
        server = msgspec.structs.replace(
            server,
            host=args.host if args.host is not None else server.host,
            port=args.port if args.port is not None else server.port,
            workers=_workers(args.workers, server.workers),
            role=args.role if args.role is not None else server.role,
        )
        config = msgspec.structs.replace(config, server=server)
    configure_logging()
    address = _address(server.host, server.port)
    try:
        # An earlier gateway on this port may still be going away (its workers finishing after
        # a kill -9 of its supervisor, a quick restart by a process manager): wait for it.
        listener = listen_when_free(
            server.host,
            server.port,
            PORT_WAIT_SECONDS,
            on_wait=lambda: log.warning(
                "waiting_for_port", address=address, up_to_seconds=PORT_WAIT_SECONDS
            ),
        )
    except OSError as error:
        log.error(
            "cannot_listen",
            address=address,
            error=error.strerror or str(error),
        )
        flush_logs()
        return EXIT_CANNOT_LISTEN
    with listener:
        # The store first: it creates its directory, which a file subscriber may share.
        try:
            unopened = asyncio.run(store_problem(config, wait_seconds=PORT_WAIT_SECONDS))
        except StoreSchemaError as error:
            # Not a check a restart would pass: the same code as a start refused later (a
            # PostgreSQL store's schema is read once the app serves: gateway/app.py).
            log.error("cannot_start", detail=config.store.url.scrub(str(error)))
            flush_logs()
            return EXIT_CANNOT_START
        problems = ([unopened] if unopened else []) + file_subscriber_problems(config.subscribers)
        for problem in problems:
            log.error("cannot_start", detail=problem)
        if problems:
            flush_logs()
            return EXIT_PROBLEMS
        host, port = listener.getsockname()[:2]
        log.info("listening", address=_address(host, port), host=host, port=port)
        flush_logs()
        return _serve(config, listener, args.config)


def _workers(option: int | str | None, configured: int | None) -> int | None:
    if option is None:
        return configured
    return None if option == AUTO else int(option)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _serve(config: GatewayConfig, listener: socket.socket, config_path: Path) -> int:
    from gateway.processes import name_process, run_directory

    role = "" if config.server.role == "all" else f" ({config.server.role})"
    if worker_count(config.server) == 1:
        name_process(f"worker 1 of 1{role}")
        return _serve_one(config, listener)
    with run_directory():
        _tell_children(config_path, config.server.role)
        name_process(f"supervisor{role}")
        return _serve_workers(config, listener)


def _uvicorn_options() -> dict[str, object]:
    return {
        "log_config": None,
        "access_log": False,
        "server_header": False,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 on its own; only
        # server.trusted_proxies decides that (gateway/ingress.py: client_address).
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
    }


def _serve_one(config: GatewayConfig, listener: socket.socket) -> int:
    """Everything in this process: ingress, store, dispatcher."""
    import uvicorn

    from gateway.app import build_app

    app = build_app(config)
    server = uvicorn.Server(uvicorn.Config(app, **_uvicorn_options()))  # type: ignore[arg-type]
    # uvicorn stops cleanly on SIGTERM as on SIGINT, then raises the signal again with the
    # handler it found. SIGTERM's default handler would end the process with 143; as SIGINT's
    # (`run_serve` set it), it raises KeyboardInterrupt, which a clean stop turns into exit 0.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[listener])
    return EXIT_OK if server.started and app.refused is None else EXIT_CANNOT_START


def _tell_children(config_path: Path, role: Role) -> None:
    """Each child process loads the same config file (it was checked above) and builds its own
    app: what the command line overrode travels in the environment, with the parent's pid."""
    from gateway.processes import WORKER_CONFIG_ENV, WORKER_PARENT_ENV, WORKER_ROLE_ENV

    os.environ[WORKER_CONFIG_ENV] = str(config_path.resolve())
    os.environ[WORKER_PARENT_ENV] = str(os.getpid())
    os.environ[WORKER_ROLE_ENV] = role


def _serve_workers(config: GatewayConfig, listener: socket.socket) -> int:
    """`worker_count` processes serving the port (uvicorn's supervisor restarts one that dies),
    as `_tell_children` said; until SIGTERM or SIGINT."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    # The supervisor logs a worker's death (and its replacement) at INFO.
    log_uvicorn_records(logging.INFO)
    # The parent holds the socket and every worker accepts on it; SIGTERM or SIGINT to the
    # parent stops every worker, then the parent returns.
    supervisor = Multiprocess(
        uvicorn.Config(
            "gateway.app:worker_app",
            factory=True,
            workers=worker_count(config.server),
            **_uvicorn_options(),  # type: ignore[arg-type]
        ),
        sockets=[listener],
    )
    supervisor.run()
    failed = any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes)
    return EXIT_CANNOT_START if failed else EXIT_OK


def run_reprocess(args: argparse.Namespace) -> int:
    """Quarantined payloads through their adapters again; exit 1 if some are still invalid."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    report = _with_store(config, lambda store: reprocess_quarantine(config, store, print))
    print(
        f"reprocessed: {report.accepted} accepted, {report.duplicate} duplicate, "
        f"{report.still_invalid} still invalid, {report.skipped} skipped"
    )
    return EXIT_PROBLEMS if report.still_invalid or report.skipped else EXIT_OK


class _StoreRefused(Exception):
    """The store of a command could not be opened or used: `main` prints why (its secrets
    scrubbed already) and exits 1."""


def _with_store(config: GatewayConfig, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` against the config's store, opened for the duration of one command.

    Whichever store it is: a command runs against any node's config (CONTRACT.md 7)."""
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
        raise _StoreRefused(url.scrub(str(error))) from None
    except StoreUnavailable as error:
        raise _StoreRefused(url.scrub(f"store unavailable: {error}")) from None


def run_migrate(args: argparse.Namespace) -> int:
    """Create or migrate the store's schema, print the version it left, and exit: what every
    `gateway serve` does at start, alone (before a deploy, say)."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS

    async def version(store: Store) -> int:
        return store.schema_version

    print(f"{config.store.url.redacted}: schema version {_with_store(config, version)}")
    return EXIT_OK


def run_dead_letters(args: argparse.Namespace) -> int:
    """List dead letters: event id, subscriber, attempts, when it died, last error (tab-separated
    under a header line, or JSON lines)."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    if not _known_subscriber(config, args.subscriber):
        return EXIT_PROBLEMS
    letters = _with_store(config, lambda store: _every_dead_letter(store, args.subscriber))
    if not args.json:
        # The --json field names, so a column reads the same in either form.
        print("event_id\tsubscriber\tattempts\tdead_at\tlast_error")
    for letter in letters:
        if args.json:
            line = msgspec.json.encode(letter).decode()
        else:
            error = (letter.last_error or "").replace("\t", " ").replace("\n", " ")
            line = (
                f"{letter.event_id}\t{letter.subscriber}\t{letter.attempts}\t{letter.dead_at}"
                f"\t{error}"
            )
        print(line)
    return EXIT_OK


async def _every_dead_letter(store: Store, subscriber: str | None) -> list[DeadLetterItem]:
    """Every dead letter, oldest first: the admin API's pages, walked to the end."""
    letters: list[DeadLetterItem] = []
    cursor: str | None = None
    while True:
        page = await list_dead_letters(store, subscriber=subscriber, limit=MAX_LIMIT, cursor=cursor)
        letters += page.items
        cursor = page.next_cursor
        if cursor is None:
            return letters[::-1]


def _known_subscriber(config: GatewayConfig, name: str | None) -> bool:
    if name is None or name in config.subscribers:
        return True
    known = ", ".join(sorted(config.subscribers)) or "none"
    print(f"no subscriber named {name!r} (configured: {known})", file=sys.stderr)
    return False


def run_redrive(args: argparse.Namespace) -> int:
    """Re-queue dead letters: all, one subscriber's, or those that died in a time window."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    if not _known_subscriber(config, args.subscriber):
        return EXIT_PROBLEMS
    since = None if args.since is None else args.since.timestamp()
    until = None if args.until is None else args.until.timestamp()
    count = _with_store(
        config,
        lambda store: redrive(store, config, subscriber=args.subscriber, since=since, until=until),
    )
    print(f"redriven: {count}")
    return EXIT_OK


def run_replay(args: argparse.Namespace) -> int:
    """Send a stored event again, to one subscriber or to every one it was delivered to."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    if not _known_subscriber(config, args.subscriber):
        return EXIT_PROBLEMS

    targets = None if args.subscriber is None else [args.subscriber]
    count = _with_store(config, lambda store: replay_event(store, config, args.event_id, targets))
    if count is None:
        print(f"no stored event {args.event_id!r}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"replayed {args.event_id} to {_plural(count, 'subscriber')}")
    return EXIT_OK


def run_enable(args: argparse.Namespace) -> int:
    """Re-enable a subscriber disabled by a 410 Gone (or close an open circuit now)."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    if not _known_subscriber(config, args.subscriber):
        return EXIT_PROBLEMS
    _with_store(config, lambda store: enable(store, config, args.subscriber))
    print(f"enabled {args.subscriber}")
    return EXIT_OK


def run_public_key(args: argparse.Namespace) -> int:
    """Print the whpk_ public keys a subscriber verifies v1a signatures with."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    if not _known_subscriber(config, args.subscriber):
        return EXIT_PROBLEMS
    secrets = config.subscribers[args.subscriber].secrets
    if not secrets:
        print(f"{args.subscriber} has no secret: what it receives is not signed", file=sys.stderr)
        return EXIT_PROBLEMS
    keys = [
        public_key_of(secret.reveal()) for secret in secrets if secret.reveal().startswith("whsk_")
    ]
    if not keys:
        print(f"{args.subscriber} has no whsk_ signing key (it is signed with v1 only)")
        return EXIT_PROBLEMS
    print("\n".join(keys))
    return EXIT_OK


def run_quarantine(args: argparse.Namespace) -> int:
    """List the payloads waiting in quarantine, print one's body (`quarantine show ID`), or drop
    one (`quarantine drop ID`)."""
    action: str | None = args.action
    if action is not None and action not in QUARANTINE_ACTIONS:
        # `quarantine 2` is the likely slip: say both things that can be done with an ID.
        subject = action if action.isdigit() else "ID"
        print(
            f"quarantine: no action {action!r}: `quarantine show {subject}` prints a quarantined"
            f" body, `quarantine drop {subject}` deletes it for good",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if action is not None and args.quarantine_id is None:
        verb = "show" if action == "show" else "drop"
        print(f"quarantine {action}: give the ID of the payload to {verb}", file=sys.stderr)
        return EXIT_USAGE
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    if action == "show":
        shown_id: int = args.quarantine_id
        payload = _with_store(config, lambda store: quarantined_payload(store, shown_id))
        if payload is None:
            print(f"no quarantined payload with id {shown_id}", file=sys.stderr)
            return EXIT_PROBLEMS
        # The body exactly as received: what `reprocess` will read again.
        sys.stdout.buffer.write(payload.body)
        sys.stdout.buffer.flush()
        return EXIT_OK
    if action == "drop":
        quarantine_id: int = args.quarantine_id
        if not _with_store(config, lambda store: drop_quarantined(store, quarantine_id)):
            print(f"no quarantined payload with id {quarantine_id}", file=sys.stderr)
            return EXIT_PROBLEMS
        print(f"dropped quarantined payload {quarantine_id}")
        return EXIT_OK
    for item in _with_store(config, list_quarantine):
        if args.json:
            print(msgspec.json.encode(item).decode())
        else:
            error = item.error.replace("\t", " ").replace("\n", " ")
            print(f"{item.id}\t{item.source}\t{item.received_at}\t{error}")
    return EXIT_OK


def run_new_secret(args: argparse.Namespace) -> int:
    """Print a fresh random subscriber secret; for whsk_, its whpk_ public key on stderr."""
    secret = new_secret(args.kind)
    print(secret)
    if args.kind == "whsk":
        print(f"public key (for the subscriber): {public_key_of(secret)}", file=sys.stderr)
    return EXIT_OK


def run_sample(args: argparse.Namespace) -> int:
    """Post a correctly signed (or tokened) sample webhook of an adapter to a URL."""
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_PROBLEMS
    adapter = config.adapters.get(args.adapter)
    if adapter is None:
        print(_unknown_adapter(args.adapter, config.adapters), file=sys.stderr)
        return EXIT_USAGE
    source = next((s for s in config.sources.values() if s.adapter == adapter.name), None)
    url = args.to
    if url is None:
        if source is None:
            print(f"no source uses {adapter.name} in {args.config}: give --to", file=sys.stderr)
            return EXIT_USAGE
        url = f"http://{config.server.host}:{config.server.port}"
    url = _webhook_url(url, source.name if source else adapter.name)
    credentials = source.secrets if adapter.signed and source else source.tokens if source else ()
    secret = args.secret or (credentials[0].reveal() if credentials else None)
    if secret is None:
        if adapter.scheme == "public_key":
            # The source holds the provider's public key: only the provider can sign.
            print(
                f"{adapter.name} signs with the provider's private key: give one (PEM) with"
                " --secret",
                file=sys.stderr,
            )
        else:
            print("no secret or token to sign with: give --secret", file=sys.stderr)
        return EXIT_USAGE

    now = datetime.now(UTC)
    try:
        body = (
            adapter.sample(args.type, now)
            if adapter.sample is not None
            else sample_body(adapter.name, args.type, now)
        )
    except SampleError as error:
        print(f"no sample of {adapter.name}: {error}", file=sys.stderr)
        return EXIT_USAGE
    _say_if_unmapped(adapter, body, source)
    headers = {"content-type": "application/json"}
    params: dict[str, str] = {}
    if adapter.signed:
        # A scheme that signs the URL signs the one the provider is told (the source's
        # public_url), else the one posted to.
        signing = source or SourceSettings(name=adapter.name, adapter=adapter.name)
        if signing.public_url is None:
            signing = msgspec.structs.replace(signing, public_url=url)
        try:
            headers.update(adapter.sign_for_source(body, secret, now, signing))
        except ValueError as error:  # says what the key is not, never the key
            print(f"cannot sign a sample of {adapter.name}: {error}", file=sys.stderr)
            return EXIT_USAGE
        if source is not None and source.tokens:
            # A signed source may also want its token (CONTRACT.md 1a: both are checked).
            params[source.token_param] = source.tokens[0].reveal()
    else:
        params[source.token_param if source else "token"] = secret
    import httpx

    try:
        response = httpx.post(url, content=body, headers=headers, params=params, timeout=10)
    except httpx.HTTPError as error:
        print(f"cannot post to {url}: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"POST {url} -> {response.status_code} {response.text}")
    return EXIT_OK if response.is_success else EXIT_PROBLEMS


def _say_if_unmapped(adapter: Adapter, body: bytes, source: SourceSettings | None) -> None:
    """A hint on stderr when the sample's type is one the adapter has no canonical type for:
    the gateway accepts it all the same, as `<adapter>.<provider type>` of kind unmapped."""
    settings = source or SourceSettings(name=adapter.name, adapter=adapter.name)
    try:
        events: list[CanonicalEvent] = adapter.normalize_all(
            body, {}, settings, datetime.now(UTC), "none"
        )
    except AdapterError:
        return  # the gateway says what is wrong with it, in its answer
    for event in events:
        if event.data.kind == "unmapped":
            known = _known_types(adapter)
            print(
                f"note: {adapter.name} has no canonical type for {event.providertype!r}: it is"
                f" stored unmapped, as {event.type}"
                + (f" (types it knows: {', '.join(known)})" if known else ""),
                file=sys.stderr,
            )


def _known_types(adapter: Adapter) -> tuple[str, ...]:
    """The provider types an adapter maps: a built-in's table, or a described provider's."""
    if isinstance(adapter.sample, DescribedSamples):
        return adapter.sample.known_types()
    return known_types(adapter.name) if adapter.origin == "builtin" else ()


def _webhook_url(url: str, source: str) -> str:
    """`url` as given when it has a path; a bare base URL (`http://127.0.0.1:8090`) gets the
    source's webhook path."""
    parts = urlsplit(url)
    if parts.path.strip("/"):
        return url
    return urlunsplit(parts._replace(path=f"/webhooks/{source}"))


def _config_path(text: str) -> Path:
    return Path(text)


def _positive_workers(text: str) -> int | str:
    if text == AUTO:
        return AUTO
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= workers <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_WORKERS}, not {workers}")
    return workers


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("GATEWAY_CONFIG") or str(DEFAULT_CONFIG_PATH)
    parser.add_argument(
        "--config",
        type=_config_path,
        default=Path(default),
        metavar="FILE",
        help=f"the config file (default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG_PATH})",
    )


def _adapters_help() -> str:
    # argparse formats `%` itself: none of these names has one.
    return (
        f"a built-in adapter ({', '.join(sorted(ADAPTERS))}), a preset"
        f" ({', '.join(sorted(PRESETS))}), or a provider the config describes"
    )


def program_name(argv0: str) -> str:
    """The name help and usage say: `finrelay` when called so, else `gateway` (`python -m
    gateway` has `__main__.py` as argv[0])."""
    called = Path(argv0).stem  # `finrelay.exe` on Windows
    return called if called in PROGRAM_NAMES else "gateway"


def build_parser(prog: str = "gateway") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="finrelay: provider webhooks in, one canonical CloudEvents envelope out.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"finrelay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    normalize = commands.add_parser(
        "normalize",
        help="print the canonical event a provider payload becomes",
        description=(
            "Print the canonical event a payload becomes. Reads no config and checks no "
            "signature; `verification` is `none`. Exit 2 with the typed error on stderr when "
            "the payload is invalid."
        ),
    )
    normalize.add_argument("adapter", metavar="ADAPTER", help=_adapters_help())
    normalize.add_argument("file", nargs="?", metavar="FILE", help="the body; stdin when absent")
    normalize.add_argument(
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="NAME:VALUE",
        help="a request header the adapter reads (repeatable), e.g. X-Webhook-Event:x.y",
    )
    normalize.add_argument("--source", help="the source name (default: the adapter's name)")
    normalize.add_argument(
        "--currency", type=_currency, help="the source's default currency setting"
    )
    normalize.add_argument(
        "--received-at", type=_time, help="the receive time (default: now), ISO 8601"
    )
    normalize.add_argument(
        "--compact",
        action="store_true",
        help="print the exact bytes, not indented (one event a line)",
    )
    normalize.add_argument(
        "--config",
        type=_config_path,
        metavar="FILE",
        help="also know the providers this config file describes ([providers.*]); an"
        " extension of the contract, whose normalize reads no config (and without this option"
        " it reads none: not even $GATEWAY_CONFIG)",
    )
    normalize.set_defaults(handler=run_normalize)

    providers = commands.add_parser(
        "providers",
        help="list the adapters a source may name, with their signature schemes",
        description=(
            "List every adapter a source may name: built-in, preset, or described in the "
            "config's [providers.*] (which replaces a preset or built-in of its name); one a "
            "line: name, origin (builtin, preset or config), signature scheme."
        ),
    )
    providers.add_argument(
        "--json", action="store_true", help="JSON lines (name, origin, scheme), not tab-separated"
    )
    _add_config_option(providers)
    providers.set_defaults(handler=run_providers)

    check = commands.add_parser(
        "check-config",
        help="validate a config file",
        description="Report every problem of a config file with its place; exit 1 if any.",
    )
    _add_config_option(check)
    check.set_defaults(handler=run_check_config)

    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description=(
            "Run the gateway until SIGINT or SIGTERM: ingress, delivery, health and metrics, on "
            "the config's server.host and server.port (or the options below). Exit 0 after a "
            "clean stop, 1 when the config or a start-up check fails, 3 when the app fails to "
            "start, 4 when the address cannot be listened on."
        ),
    )
    _add_config_option(serve)
    serve.add_argument("--host", help="listen on this address instead of server.host")
    serve.add_argument("--port", type=int, help="listen on this port instead of server.port")
    serve.add_argument(
        "--workers",
        type=_positive_workers,
        help='run this many worker processes ("auto": one per CPU) instead of server.workers',
    )
    serve.add_argument(
        "--role",
        choices=ROLES,
        help="all (receive and deliver), ingest (receive only) or deliver (send only),"
        " instead of server.role",
    )
    serve.set_defaults(handler=run_serve)

    migrate = commands.add_parser(
        "migrate",
        help="create or migrate the store's schema, then exit",
        description=(
            "Create or migrate the store's schema (SQLite or PostgreSQL), as `serve` does at "
            "start, and print the schema version it left. Exit 1 when the store cannot be "
            "reached or its schema is newer than this gateway's."
        ),
    )
    _add_config_option(migrate)
    migrate.set_defaults(handler=run_migrate)

    reprocess = commands.add_parser(
        "reprocess",
        help="run quarantined payloads through their adapters again",
        description=(
            "Run every quarantined payload through its adapter again: one that now reads is "
            "stored and routed, one that does not stays in quarantine with the new reason. "
            "Exit 0 when every payload was released, 1 when some are still invalid or were "
            "skipped (their source is no longer configured)."
        ),
    )
    _add_config_option(reprocess)
    reprocess.set_defaults(handler=run_reprocess)

    quarantine = commands.add_parser(
        "quarantine",
        help="list quarantined payloads, show one's body, or drop one",
        description=(
            "List the payloads waiting in quarantine (id, source, received, error); with "
            "`show ID` print one's body as it was received; with `drop ID` delete one for good "
            "(exit 1 when there is no such payload waiting)."
        ),
    )
    # Not `choices`: argparse's answer to `quarantine 2` ("invalid choice") does not say that
    # an ID comes after the action; run_quarantine does.
    quarantine.add_argument(
        "action",
        nargs="?",
        metavar="ACTION",
        help="show (print the body) or drop (delete it); none: list them all",
    )
    quarantine.add_argument(
        "quarantine_id", nargs="?", type=int, metavar="ID", help="a payload's id, as listed"
    )
    quarantine.add_argument(
        "--json",
        action="store_true",
        help="JSON lines (id, source, received_at, verification, error), not tab-separated",
    )
    _add_config_option(quarantine)
    quarantine.set_defaults(handler=run_quarantine)

    secret = commands.add_parser(
        "new-secret",
        help="print a fresh random subscriber secret",
        description=(
            "Print a new random subscriber secret: whsec_ signs with v1 (HMAC-SHA256), whsk_ "
            "with v1a (Ed25519; its whpk_ public key, for the subscriber, goes to stderr)."
        ),
    )
    secret.add_argument(
        "--kind",
        choices=("whsec", "whsk"),
        default="whsec",
        help="whsec (the default): an HMAC-SHA256 secret, for v1 signatures; whsk: an Ed25519"
        " signing key, for v1a",
    )
    secret.set_defaults(handler=run_new_secret)

    sample = commands.add_parser(
        "sample",
        help="post a correctly signed sample provider webhook",
        description=(
            "Post a sample webhook of ADAPTER, signed (or tokened) as the provider would, to the "
            "gateway. TYPE is the provider's type or a canonical type; one the adapter does "
            "not know is posted all the same, and stored unmapped."
        ),
    )
    sample.add_argument("adapter", metavar="ADAPTER", help=_adapters_help())
    sample.add_argument(
        "type",
        nargs="?",
        metavar="TYPE",
        help="a provider or canonical type (default: a typical one)",
    )
    sample.add_argument(
        "--to", metavar="URL", help="where to post (default: this config's source for ADAPTER)"
    )
    sample.add_argument(
        "--secret",
        help="signing secret or token (default: the source's, from the config); for a"
        " public_key scheme, the provider's private key (PEM)",
    )
    _add_config_option(sample)
    sample.set_defaults(handler=run_sample)

    dead = commands.add_parser(
        "dead-letters",
        help="list dead letters",
        description=(
            "One dead letter a line, newest last, under a header: event id, subscriber, "
            "attempts, when it died (RFC 3339), last error."
        ),
    )
    dead.add_argument("--json", action="store_true", help="JSON lines instead of tab-separated")
    dead.add_argument("--subscriber", metavar="NAME", help="only this subscriber's")
    _add_config_option(dead)
    dead.set_defaults(handler=run_dead_letters)

    redrive = commands.add_parser(
        "redrive",
        help="re-queue dead letters",
        description="Make dead letters pending again, with a fresh retry schedule.",
    )
    redrive.add_argument("--subscriber", metavar="NAME", help="only this subscriber's")
    redrive.add_argument(
        "--since",
        type=_time,
        metavar="T",
        help="died at or after T: RFC 3339 (2026-12-07T16:00:00Z; no offset means UTC) or Unix"
        " seconds",
    )
    redrive.add_argument(
        "--until", type=_time, metavar="T", help="died at or before T (as --since)"
    )
    _add_config_option(redrive)
    redrive.set_defaults(handler=run_redrive)

    replay = commands.add_parser(
        "replay",
        help="send a stored event again",
        description=(
            "Send a stored event again, due now with a fresh retry schedule: to every "
            "subscriber it was delivered to that this config names, or with --subscriber to "
            "that one. Exit 1 when there is no such event."
        ),
    )
    replay.add_argument("event_id", metavar="EVENT_ID")
    replay.add_argument(
        "--subscriber", metavar="NAME", help="only to this subscriber (any configured one)"
    )
    _add_config_option(replay)
    replay.set_defaults(handler=run_replay)

    enable = commands.add_parser(
        "enable",
        help="re-enable a subscriber that answered 410 Gone (or close its circuit)",
        description=(
            "Re-enable a subscriber the gateway disabled after it answered 410 Gone, and close "
            "its circuit if open: its waiting deliveries are sent again from now."
        ),
    )
    enable.add_argument("subscriber", metavar="NAME")
    _add_config_option(enable)
    enable.set_defaults(handler=run_enable)

    public_key = commands.add_parser(
        "public-key",
        help="print the whpk_ key a subscriber verifies v1a signatures with",
        description=(
            "Print the whpk_ public key of each whsk_ secret of a subscriber, one a line: what "
            "the subscriber verifies v1a (Ed25519) signatures with. Exit 1 when it has none."
        ),
    )
    public_key.add_argument("subscriber", metavar="NAME")
    _add_config_option(public_key)
    public_key.set_defaults(handler=run_public_key)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(program_name(sys.argv[0])).parse_args(argv)
    handler = args.handler
    try:
        code: int = handler(args)
    except _StoreRefused as error:
        print(error, file=sys.stderr)
        return EXIT_PROBLEMS
    return code

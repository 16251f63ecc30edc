"""`gateway serve` and its start-up (the port, the store, the file subscribers; then one process
or a supervisor of workers), and `gateway migrate`: what every serve does to the store at start,
alone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path

import msgspec
import structlog

from gateway.cli.command import CONFIG, Command, argument
from gateway.cli.context import EXIT_OK, EXIT_PROBLEMS, command_config, with_store
from gateway.config import AUTO, MAX_WORKERS, ROLES, GatewayConfig, Role, worker_count
from gateway.logs import configure_logging, flush_logs, log_uvicorn_records
from gateway.preflight import (
    PORT_WAIT_SECONDS,
    file_subscriber_problems,
    listen_when_free,
    store_problem,
    tracing_problem,
)
from gateway.store import Store, StoreSchemaError

log = structlog.get_logger("gateway")

# `gateway serve` only: the app failed to start (uvicorn's code for it), the address is taken.
EXIT_CANNOT_START = 3
EXIT_CANNOT_LISTEN = 4


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
    config = command_config(args.config)
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
    traces = tracing_problem()
    if traces is not None:
        log.error("cannot_start", detail=traces)
        flush_logs()
        return EXIT_PROBLEMS
    address = _address(server.host, server.port)
    try:
        # An earlier gateway on this port may still be going away (its workers finishing after
        # a kill -9 of its supervisor, a quick restart by a process manager): wait for it.
        listener = listen_when_free(
            server.host,
            server.port,
            PORT_WAIT_SECONDS,
            on_wait=lambda: _say_now(
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
        # server.trusted_proxies decides that (gateway/ingress/clients.py: client_address).
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


def run_migrate(args: argparse.Namespace) -> int:
    """Create or migrate the store's schema, print the version it left, and exit: what every
    `gateway serve` does at start, alone (before a deploy, say)."""
    config = command_config(args.config)

    async def version(store: Store) -> int:
        return store.schema_version

    print(f"{config.store.url.redacted}: schema version {with_store(config, version)}")
    return EXIT_OK


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


SERVE = Command(
    "serve",
    run_serve,
    summary="run the gateway",
    description=(
        "Run the gateway until SIGINT or SIGTERM: ingress, delivery, health and metrics, on "
        "the config's server.host and server.port (or the options below). Exit 0 after a "
        "clean stop, 1 when the config or a start-up check fails, 3 when the app fails to "
        "start, 4 when the address cannot be listened on."
    ),
    arguments=(
        CONFIG,
        argument("--host", help="listen on this address instead of server.host"),
        argument("--port", type=int, help="listen on this port instead of server.port"),
        argument(
            "--workers",
            type=_positive_workers,
            help='run this many worker processes ("auto": one per CPU) instead of server.workers',
        ),
        argument(
            "--role",
            choices=ROLES,
            help="all (receive and deliver), ingest (receive only) or deliver (send only),"
            " instead of server.role",
        ),
    ),
)

MIGRATE = Command(
    "migrate",
    run_migrate,
    summary="create or migrate the store's schema, then exit",
    description=(
        "Create or migrate the store's schema (SQLite or PostgreSQL), as `serve` does at "
        "start, and print the schema version it left. Exit 1 when the store cannot be "
        "reached or its schema is newer than this gateway's."
    ),
    arguments=(CONFIG,),
)


def _say_now(event: str, **fields: object) -> None:
    """A warning the operator needs while it holds: written at once, not at exit (the
    supervisor has no periodic flush of its log lines)."""
    log.warning(event, **fields)
    flush_logs()

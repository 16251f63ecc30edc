"""The ASGI application: the webhook ingress in front of a small Starlette app (health,
readiness, metrics), around one store and one dispatcher that live as long as the app (its
lifespan)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE

from gateway.admin.api import AdminApi, not_found_answer
from gateway.admin.page import operator_page
from gateway.config import ROLES, GatewayConfig, SubscriberConfig, load_config
from gateway.delivery.dispatcher import Dispatcher
from gateway.delivery.registry import build_transport
from gateway.ingress import WEBHOOK_PREFIX, Ingress
from gateway.logs import (
    configure_logging,
    flush_logs,
    flush_logs_periodically,
    wait_for_logs,
)
from gateway.metrics import Metrics
from gateway.orphans import die_with_parent
from gateway.processes import (
    WORKER_CONFIG_ENV,
    WORKER_PARENT_ENV,
    WORKER_ROLE_ENV,
    WORKER_RUN_ENV,
    name_process,
    take_worker_number,
)
from gateway.request_id import RequestIdMiddleware
from gateway.retention import purge_periodically
from gateway.routing import Router
from gateway.store import Store, StoreUnavailable, open_store
from gateway.store_opening import StoreOpening
from gateway.tracing import Tracing

__all__ = [
    "WORKER_CONFIG_ENV",
    "WORKER_PARENT_ENV",
    "WORKER_ROLE_ENV",
    "build_app",
    "build_transport",
    "worker_app",
    "worker_settings",
]

log = structlog.get_logger("gateway")

# How long the lifespan waits for the store before the app answers anything: SQLite's file opens
# well within it, so such a gateway serves only once its store is open; a PostgreSQL node that
# waits for the database (or for another node's migration) answers /healthz, and 503, meanwhile.
OPEN_GRACE_SECONDS = 1.0
# How long a stopping gateway waits for its last spans to reach the collector: one that is down
# must not hold the stop (docs/reference/processes.md).
TRACES_FLUSH_SECONDS = 2.0


def worker_app() -> ASGIApp:
    """One worker of `serve --workers N`: uvicorn calls this in every worker process."""
    config, parent = worker_settings()
    # A worker whose supervisor was killed (kill -9) would go on serving the port on its own,
    # past any restart of the gateway: the kernel tells it to stop (SIGTERM: it finishes what
    # it holds, then closes the port).
    die_with_parent(parent)
    number = take_worker_number(Path(os.environ[WORKER_RUN_ENV]))
    role = "" if config.server.role == "all" else f" ({config.server.role})"
    name_process(f"worker {number}{role}")
    return build_app(config, parent=parent, worker=number)


def worker_settings() -> tuple[GatewayConfig, int]:
    """What a worker of `gateway serve` builds its app from, as the supervisor left it in the
    environment: the config (with the role the supervisor gave it) and the supervisor's pid."""
    configure_logging()
    # The parent's pid as it gave it: os.getppid() here would already be 1 if it died while
    # this worker was starting.
    parent = int(os.environ[WORKER_PARENT_ENV])
    config = load_config(Path(os.environ[WORKER_CONFIG_ENV]))
    role = next((r for r in ROLES if r == os.environ.get(WORKER_ROLE_ENV)), None)
    if role is not None:
        config = msgspec.structs.replace(
            config, server=msgspec.structs.replace(config.server, role=role)
        )
    return config, parent


class GatewayApp:
    """`/webhooks/<source>` to `webhooks` (the ingress handler, or a 404 in a `deliver`
    process); everything else, lifespan included, to Starlette. The webhook path is the one
    that must be fast (gateway/ingress/).

    `refused` says why the start was refused (a store schema newer than this gateway), once
    the app stopped for it: `gateway serve` then exits with its code for a failed start."""

    def __init__(self, webhooks: ASGIApp, rest: ASGIApp) -> None:
        self._webhooks = webhooks
        self._rest = rest
        self.refused: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _is_webhook_path(scope["path"]):
            await self._webhooks(scope, receive, send)
        else:
            await self._rest(scope, receive, send)


async def _not_received_here(scope: Scope, receive: Receive, send: Send) -> None:
    # docs/reference/nodes.md: a `deliver` process receives no webhooks, whatever the method.
    await JSONResponse({"error": "not_found"}, status_code=404)(scope, receive, send)


def _is_webhook_path(path: str) -> bool:
    name = path[len(WEBHOOK_PREFIX) :]
    return path.startswith(WEBHOOK_PREFIX) and bool(name) and "/" not in name


async def _not_found(request: Request, error: Exception) -> Response:
    # A path no route's pattern takes (a newline in it: Mount's `.*` stops there) ends here,
    # under /admin too: it answers as the admin API's own 404s do.
    if request.url.path.startswith("/admin"):
        return not_found_answer()
    return PlainTextResponse("Not Found", status_code=404)


async def _admin_off(scope: Scope, receive: Receive, send: Send) -> None:
    await not_found_answer()(scope, receive, send)


def _admin_routes(
    config: GatewayConfig, store: Store, metrics: Metrics, tracing: Tracing
) -> list[BaseRoute]:
    """/admin/api (the JSON API) and /admin/ (the operator page) when `[admin]` has a token;
    without one everything under /admin is 404, as if it did not exist (docs/reference/admin.md)."""
    if not config.admin.enabled:
        return [Mount("/admin", app=_admin_off)]
    return [
        Mount("/admin/api", app=AdminApi(config, store, tracing=tracing)),
        # The operator page; a path it does not know answers as if the page were off.
        Mount(
            "/admin",
            app=operator_page(config, store, metrics, not_found=_admin_off, tracing=tracing),
        ),
    ]


def _nothing() -> None:
    return


def build_app(
    config: GatewayConfig,
    store: Store | None = None,
    *,
    parent: int | None = None,
    worker: int = 1,
    tracing: Tracing | None = None,
) -> GatewayApp:
    """The gateway's ASGI app for the config's `server.role` (docs/reference/nodes.md): `all`
    receives and delivers, `ingest` has no dispatcher at all, `deliver` no ingress. `parent` is the
    pid of the supervisor that started this worker, `worker` its number (for the log); `tracing` is
    built from the `OTEL_*` variables unless given."""
    role = config.server.role
    # One per process, built here, in the worker: the SDK's export thread must run in the
    # process whose spans it sends (`gateway serve` checked the variables before any worker).
    tracing = tracing or Tracing.from_environment()
    url = config.store.url
    store = store or open_store(url.reveal())
    metrics = Metrics()
    store.watch_commits(metrics.record_commit)
    dispatcher: Dispatcher | None = None
    # Those this process delivers to: every subscriber, unless it only ingests.
    subscribers: dict[str, SubscriberConfig] = {}
    if role in ("all", "deliver"):
        subscribers = dict(config.subscribers)
        transports = {name: build_transport(sub) for name, sub in subscribers.items()}
        dispatcher = Dispatcher(store, subscribers, transports, metrics, tracing=tracing)
        # Deliveries another process committed (a PostgreSQL store hears of them): look now,
        # not at the next poll.
        store.watch_new_deliveries(dispatcher.notify)
    webhooks: ASGIApp = RequestIdMiddleware(_not_received_here)
    if role in ("all", "ingest"):
        wake = dispatcher.notify if dispatcher is not None else _nothing
        webhooks = Ingress(config, store, Router(config.routes), metrics, wake, tracing=tracing)
    tasks: list[asyncio.Task[None]] = []

    def opened() -> None:
        if dispatcher is not None:
            dispatcher.start()
        tasks.append(
            asyncio.create_task(
                purge_periodically(store, config.store.retention_days), name="retention"
            )
        )
        log.info(
            "started",
            role=role,
            worker=worker,
            pid=os.getpid(),
            store=url.redacted,
            sources=sorted(config.sources),
            subscribers=sorted(subscribers),
        )

    def refused(reason: str) -> None:
        # Stopped as if told to (SIGTERM): uvicorn closes the port, the lifespan ends, and
        # `gateway serve` exits with its code for a failed start (gateway/cli/serve.py).
        log.error("cannot_start", detail=reason)
        gateway.refused = reason
        os.kill(os.getpid(), signal.SIGTERM)

    opening = StoreOpening(
        store, url, wait_while_unavailable=url.shared, on_open=opened, on_refused=refused
    )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        # docs/reference/cli.md: the store open and reachable and, where this process delivers, the
        # dispatch loop running (not waiting to restart after a crash).
        if not opening.is_open:
            return _unready(opening.waiting_for)
        try:
            await store.ping()
        except StoreUnavailable as error:
            return _unready(url.scrub(f"the store is unavailable: {error}"))
        if dispatcher is not None and not dispatcher.running:
            return _unready("the dispatcher is not running")
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(request: Request) -> Response:
        # Counted on the reader connection: a scrape never holds up ingest.
        if opening.is_open:
            with contextlib.suppress(StoreUnavailable):
                backlog = await store.delivery_backlog()
                metrics.set_backlog(config.subscribers, backlog, time.time())
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for warning in config.warnings:
            log.warning("config_warning", detail=warning)
        # Lines that could not be written (a full disk) are counted in /metrics.
        flusher = flush_logs_periodically(metrics.log_lines_dropped.inc)
        tasks.append(asyncio.create_task(flusher, name="log-flusher"))
        opening.start()
        await opening.settled(OPEN_GRACE_SECONDS)
        if not opening.is_open and gateway.refused is None:
            log.info("waiting_for_store", detail=opening.waiting_for)
        try:
            yield
        finally:
            await opening.stop()
            if dispatcher is not None and opening.is_open:
                await dispatcher.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await store.close()
            # Bounded, and off the event loop (the SDK's flush blocks).
            await asyncio.to_thread(tracing.shutdown, TRACES_FLUSH_SECONDS)
            log.info("stopped")
            flush_logs()
            # A worker process may be ended right after its lifespan: its last lines must not
            # wait in the log writer's buffer then (bounded: a stdout nobody reads costs 1 s).
            wait_for_logs(1.0)
            if gateway.refused is not None and parent is not None:
                # uvicorn's supervisor restarts a worker that exits, except with its code for
                # a failed start: then it stops every worker and itself. A refused store would
                # refuse every restarted worker alike.
                os._exit(STARTUP_FAILURE)

    rest = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *_admin_routes(config, store, metrics, tracing),
        ],
        exception_handlers={404: _not_found},
        lifespan=lifespan,
    )
    gateway = GatewayApp(webhooks, RequestIdMiddleware(rest))
    return gateway


def _unready(detail: str) -> Response:
    return JSONResponse({"status": "unavailable", "detail": detail}, status_code=503)

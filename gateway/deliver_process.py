"""The deliver process of `gateway serve` on SQLite (gateway/processes.py): the gateway's app in
its `deliver` role, run by uvicorn without a port, for its lifespan: the dispatcher, its
heartbeat, retention. Health, metrics and /admin are the workers' to serve."""

from __future__ import annotations

import contextlib
import signal

import uvicorn

from gateway.app import build_app, worker_settings
from gateway.orphans import die_with_parent

__all__ = ["run_deliver_process"]


def run_deliver_process() -> None:
    config, store, parent = worker_settings("deliver")
    die_with_parent(parent, signal.SIGTERM)
    app = build_app(config, store, parent=parent)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    # As `gateway serve` in one process: SIGTERM stops it cleanly (its leases given back).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[])
    raise SystemExit(0 if server.started and app.refused is None else 3)

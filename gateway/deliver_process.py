"""The deliver process of `gateway serve` on SQLite (gateway/processes.py): the gateway's app in
its `deliver` role, run by uvicorn without a port, for its lifespan: the dispatcher, its
heartbeat, retention. Health, metrics and /admin are the workers' to serve. It runs at a lower
priority than the workers (`server.deliver_nice`)."""

from __future__ import annotations

import contextlib
import os
import signal

import uvicorn

from gateway.app import build_app, worker_settings
from gateway.orphans import die_with_parent

__all__ = ["run_deliver_process"]


def run_deliver_process(index: int = 0, count: int = 1) -> None:
    """Deliver process `index` of `count` (`server.deliver_processes`)."""
    config, store, parent = worker_settings("deliver")
    die_with_parent(parent, signal.SIGTERM)
    # The webhooks' answers first when the CPU is short: a provider waits for each, while a
    # delivery waits in the store (the backlog shows in /metrics) and catches up after.
    os.nice(config.server.deliver_nice)
    app = build_app(config, store, parent=parent, delivery_share=(index, count))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    # As `gateway serve` in one process: SIGTERM stops it cleanly (its leases given back).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[])
    raise SystemExit(0 if server.started and app.refused is None else 3)

"""The gateway's three ways of tracing (docs/reference/traces.md), as the benchmarks compare them:

  off          OTEL_SDK_DISABLED=true: no span, no `traceparent` anywhere (the baseline);
  propagating  no OTEL_* variable, as the gateway ships: the event and its deliveries carry a
               `traceparent`, nothing is recorded or exported;
  exporting    OTEL_EXPORTER_OTLP_ENDPOINT to a local sink (bench/_otlp_sink.py, its own
               process, answering 200 at once) and OTEL_TRACES_SAMPLER=always_on: every span
               recorded and sent.

`tracing_environment` sets the variables in this process's environment while a gateway starts
(the Service copies it), having removed whatever OTEL_* variables the shell had.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from bench._common import REPO, Service, free_port, get_json, scratch

TRACING_MODES = ("off", "propagating", "exporting")


@contextlib.contextmanager
def tracing_environment(mode: str, sink: Service | None) -> Iterator[None]:
    saved = {name: value for name, value in os.environ.items() if name.startswith("OTEL_")}
    for name in saved:
        del os.environ[name]
    if mode == "off":
        os.environ["OTEL_SDK_DISABLED"] = "true"
    elif mode == "exporting":
        assert sink is not None, "exporting needs the sink"
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        os.environ["OTEL_TRACES_SAMPLER"] = "always_on"
    try:
        yield
    finally:
        for name in [name for name in os.environ if name.startswith("OTEL_")]:
            del os.environ[name]
        os.environ.update(saved)


def otlp_sink(workdir: Path) -> Service:
    port = free_port()
    argv = [sys.executable, str(REPO / "bench" / "_otlp_sink.py"), "--port", str(port)]
    return Service("otlp-sink", argv, workdir, port)


def exported_spans(sink: Service) -> int:
    """The spans the sink received since the last call (it forgets them)."""
    stats = get_json(sink.url + "/stats")
    assert isinstance(stats, dict)
    return int(stats["spans"])


@contextlib.contextmanager
def running_sink(enabled: bool) -> Iterator[Service | None]:
    """A started sink for the run (None when not `enabled`), stopped at the end."""
    if not enabled:
        yield None
        return
    with scratch(False, "otlp-sink") as workdir:
        sink = otlp_sink(workdir).start()
        try:
            yield sink
        finally:
            sink.stop()

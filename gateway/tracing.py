"""One trace from the provider's request to every subscriber (docs/reference/traces.md).

The webhook's server span and each delivery attempt's span are opened here and nowhere else;
the rest of the gateway sees a `TraceContext` (the W3C `traceparent` / `tracestate` pair, as it
is stored with an event and sent with a message) and a `Span` it can annotate and end.

Two ways of running, chosen once per process from the standard `OTEL_*` variables:
- **exporting** (an OTLP endpoint is set): the OpenTelemetry SDK records spans, samples them as
  `OTEL_TRACES_SAMPLER` says, and a batch processor (bounded queue, its own thread) sends them
  with the OTLP HTTP/protobuf exporter, which reads its endpoint, headers and timeout itself;
- **propagating only** (no endpoint): nothing is recorded, but every span still gets its ids,
  so the event and its deliveries carry a `traceparent` that services downstream can join. A
  span is then the API's `NonRecordingSpan` around a fresh span id: a few microseconds, where
  an SDK span with nowhere to go costs ten times that.
`OTEL_SDK_DISABLED=true` turns both off: no span, no `traceparent` anywhere.

Log lines written while a span is open carry its `trace_id` and `span_id` (`add_trace_ids`, a
structlog processor reading a context variable this module sets).
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING

import msgspec
import structlog
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import AttributeValue

from gateway import __version__

if TYPE_CHECKING:
    from gateway.span_recording import RecordedSpan, SpanRecorder

__all__ = [
    "TRACESTATE_MAX_LENGTH",
    "Span",
    "SpanKind",
    "TraceContext",
    "Tracing",
    "TracingConfigError",
    "add_trace_ids",
    "check_environment",
    "event_trace",
]

# W3C Trace Context (https://www.w3.org/TR/trace-context/), read here rather than by the API's
# propagator: its way costs 5 to 9 us a request (a Context, a TraceState) and logs a warning,
# quoting the header, for each malformed one a caller sends; this keeps the strings as they
# travel and says nothing (a bad header is the caller's, and starts a new trace).
# `traceparent`: version-traceid-parentid-flags; a future version may append fields, 00 may not.
_TRACEPARENT = re.compile(
    r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\x00-\x1f]*)?[ \t]*"
)
_TRACEPARENT_MAX_LENGTH = 512  # what the API's propagator reads at most
_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16
# The flags a span passes on: sampled, and W3C Trace Context 2's random-trace-id (the SDK
# keeps its parent's, and sets it on the traces it starts, as `_propagated` does).
_KNOWN_FLAGS = trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID
_NEW_TRACE_FLAGS = f"{_KNOWN_FLAGS:02x}"
# `tracestate`: comma-separated key=value members (OWS around each, empty ones allowed), keys
# unique, at most 32; one that breaks a rule discards the whole header, as the API does.
_TRACESTATE_MEMBER = re.compile(
    r"([a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
_TRACESTATE_MAX_MEMBERS = 32
_TRACESTATE_MAX_READ = 8192  # longer is not parsed at all (the API's limit)
# What is kept and passed on: W3C asks every vendor to propagate at least 512 characters, and
# lets it cut longer ones (members over 128 characters first, then from the end); the
# canonical event's schema allows 512.
TRACESTATE_MAX_LENGTH = 512
_TRACESTATE_LONG_MEMBER = 128
# The (trace id, span id) of the span open in this task, for log lines (hex, as OTLP shows them).
_LOG_IDS: ContextVar[tuple[str, str] | None] = ContextVar("finrelay_trace_ids", default=None)
# The exporters this build has: HTTP/protobuf only (gRPC would bring grpcio for a protocol every
# collector also speaks over HTTP).
_PROTOCOLS = ("http/protobuf",)
# The SDK's own samplers (OTEL_TRACES_SAMPLER), the default first.
_SAMPLERS = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)


class TracingConfigError(ValueError):
    """An `OTEL_*` variable asks for something this gateway cannot do (said at start-up)."""


class TraceContext(msgspec.Struct, frozen=True, omit_defaults=True):
    """A span's context as it travels: W3C Trace Context's two header values (the CloudEvents
    distributed-tracing extension names its attributes after them)."""

    traceparent: str
    tracestate: str | None = None

    def headers(self) -> dict[str, str]:
        """The pair as message headers: `traceparent`, and `tracestate` when there is one."""
        if self.tracestate:
            return {"traceparent": self.traceparent, "tracestate": self.tracestate}
        return {"traceparent": self.traceparent}

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]


def _parent_of(carrier: Mapping[str, str] | TraceContext | None) -> TraceContext | None:
    """The context a span continues: a valid `traceparent` (with its `tracestate`) from request
    headers or a stored `TraceContext`, as this gateway writes them (version 00, the flags it
    knows); None when there is none or it is invalid (W3C rules: a new trace starts).
    A `tracestate` that is invalid is dropped, the `traceparent` still continued."""
    if carrier is None:
        return None
    if isinstance(carrier, TraceContext):
        traceparent: str | None = carrier.traceparent
        tracestate = carrier.tracestate
    else:
        traceparent = carrier.get("traceparent")
        tracestate = carrier.get("tracestate")
    if traceparent is None or len(traceparent) > _TRACEPARENT_MAX_LENGTH:
        return None
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return None
    version, trace_id, span_id, flags, more = match.groups()
    if (
        version == "ff"
        or (version == "00" and more is not None)
        or trace_id == _INVALID_TRACE_ID
        or span_id == _INVALID_SPAN_ID
    ):
        return None
    known = int(flags, 16) & _KNOWN_FLAGS
    return TraceContext(
        f"00-{trace_id}-{span_id}-{known:02x}",
        _valid_tracestate(tracestate) if tracestate else None,
    )


def _valid_tracestate(header: str) -> str | None:
    """The header's members, without empty ones and whitespace, cut to TRACESTATE_MAX_LENGTH
    W3C's way; None when it is invalid or nothing is left."""
    if len(header) > _TRACESTATE_MAX_READ:
        return None
    members: list[str] = []
    keys: set[str] = set()
    for part in header.split(","):
        member = part.strip(" \t")
        if not member:
            continue
        match = _TRACESTATE_MEMBER.fullmatch(member)
        if match is None or match.group(1) in keys:
            return None
        keys.add(match.group(1))
        members.append(member)
    if len(members) > _TRACESTATE_MAX_MEMBERS:
        return None
    joined = ",".join(members)
    if len(joined) > TRACESTATE_MAX_LENGTH:
        members = [member for member in members if len(member) <= _TRACESTATE_LONG_MEMBER]
        while members and len(joined := ",".join(members)) > TRACESTATE_MAX_LENGTH:
            members.pop()
        joined = ",".join(members)
    return joined or None


def _span_context_of(context: TraceContext, *, remote: bool) -> trace.SpanContext:
    traceparent = context.traceparent
    return trace.SpanContext(
        int(traceparent[3:35], 16),
        int(traceparent[36:52], 16),
        remote,
        trace.TraceFlags(int(traceparent[53:55], 16)),
        TraceState.from_header([context.tracestate]) if context.tracestate else None,
    )


def _context_of(span_context: trace.SpanContext) -> TraceContext:
    traceparent = (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{span_context.trace_flags:02x}"
    )
    state = span_context.trace_state
    return TraceContext(traceparent, state.to_header() if state else None)


def _link_to(context: TraceContext) -> Link | None:
    valid = _parent_of(context)
    return None if valid is None else Link(_span_context_of(valid, remote=True))


class Span:
    """One open span: its `context` to store or send, attributes and events while it runs, and
    its end. A context manager that makes it the log lines' span until it ends.

    Recorded (exporting, sampled: gateway/span_recording.py), or a context alone (propagating
    only, or not sampled: nothing to record, so no span object at all), or neither (tracing
    disabled)."""

    __slots__ = ("_span", "_token", "context")

    def __init__(self, span: RecordedSpan | None, context: TraceContext | None = None) -> None:
        self._span = span
        self._token: Token[tuple[str, str] | None] | None = None
        self.context: TraceContext | None = (
            _context_of(span.context) if span is not None else context
        )

    @property
    def recording(self) -> bool:
        return self._span is not None

    def set(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self._span is not None:
            self._span.set(attributes)

    def event(self, name: str) -> None:
        """A step inside the span (verified, normalized, stored): an event, not a child span,
        because an event costs a tuple where a span costs an export."""
        if self._span is not None:
            self._span.add_event(name)

    def fail(self, error_type: str) -> None:
        """The span's operation failed: `error.type`, and the span's status is an error."""
        if self._span is not None:
            self._span.fail(error_type)

    def __enter__(self) -> Span:
        if self.context is not None:
            traceparent = self.context.traceparent
            self._token = _LOG_IDS.set((traceparent[3:35], traceparent[36:52]))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None and kind is not None:
            self.fail(kind.__name__)
        if self._token is not None:
            _LOG_IDS.reset(self._token)
            self._token = None
        if self._span is not None:
            span, self._span = self._span, None
            span.end()


class Tracing:
    """The process's tracing: built once from the environment, shut down (flushed) at exit."""

    def __init__(self, *, enabled: bool, recorder: SpanRecorder | None = None) -> None:
        self.enabled = enabled
        self._recorder = recorder if enabled else None
        self._random = random.Random()  # noqa: S311 - span ids need uniqueness, not secrecy

    @property
    def exporting(self) -> bool:
        return self._recorder is not None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Tracing:
        """What the `OTEL_*` variables ask for (docs/reference/traces.md); raises
        `TracingConfigError` for a protocol, exporter or sampler this gateway does not have."""
        env = os.environ if environ is None else environ
        if _disabled(env):
            return cls(enabled=False)
        if not _exports(env):
            return cls(enabled=True)
        return cls(enabled=True, recorder=_exporting_recorder(env))

    def span(
        self,
        name: str,
        kind: SpanKind,
        *,
        parent: Mapping[str, str] | TraceContext | None,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[TraceContext] = (),
    ) -> Span:
        """A new span continuing `parent` (request headers or a stored context; a new trace
        when it has no valid `traceparent`). Use it as a context manager."""
        if not self.enabled:
            return Span(None)
        above = _parent_of(parent)
        if self._recorder is not None:
            started = self._recorder.start(
                name,
                kind,
                None if above is None else _span_context_of(above, remote=True),
                attributes,
                [link for link in map(_link_to, links) if link is not None],
            )
            if isinstance(started, trace.SpanContext):
                return Span(None, _context_of(started))
            return Span(started)
        return Span(None, self._propagated(above))

    def new_trace(self, name: str, link: TraceContext | None) -> TraceContext | None:
        """The context of a new trace's root span, linked to `link` (a replay or a redrive of
        an event: its deliveries' attempts belong to the new trace). None when disabled."""
        with self.span(name, SpanKind.INTERNAL, parent=None, links=[link] if link else ()) as root:
            return root.context

    def _propagated(self, parent: TraceContext | None) -> TraceContext:
        """A fresh span id in the parent's trace (with its flags and state), or a new sampled
        trace (random, as the SDK's): nothing here records, so the sampled flag says what
        services downstream may do."""
        span_id = self._random.getrandbits(64) or 1
        if parent is None:
            trace_id = self._random.getrandbits(128) or 1
            return TraceContext(f"00-{trace_id:032x}-{span_id:016x}-{_NEW_TRACE_FLAGS}")
        traceparent = parent.traceparent
        return TraceContext(
            f"{traceparent[:36]}{span_id:016x}{traceparent[52:]}", parent.tracestate
        )

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        """Send what is queued, waiting at most `timeout_seconds` (a collector that is down
        must not hold a stopping gateway)."""
        if self._recorder is None:
            return
        processor = self._recorder.processor

        def flush_and_stop() -> None:
            processor.force_flush(int(timeout_seconds * 1000))
            processor.shutdown()

        # In a thread of its own, waited for at most the timeout: the SDK's flush does not
        # honour its timeout, and its shutdown waits up to 30 s for an export under way.
        stopping = threading.Thread(target=flush_and_stop, name="otel-shutdown", daemon=True)
        stopping.start()
        stopping.join(timeout_seconds)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise `TracingConfigError` when the `OTEL_*` variables ask for what this gateway cannot
    do: what `gateway serve` checks before it starts any worker, without starting anything."""
    env = os.environ if environ is None else environ
    if not _disabled(env):
        _exports(env)


def _disabled(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _exports(env: Mapping[str, str]) -> bool:
    """Whether spans are exported (an OTLP endpoint is set, and no `none` exporter); raises
    `TracingConfigError` for any variable asking for what this gateway does not have, endpoint
    or not: whoever set it meant to export, and should hear at start that it cannot."""
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter not in ("otlp", "none", ""):
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={exporter!r}: this gateway exports with OTLP only "
            "('otlp', or 'none' for no export)"
        )
    # The traces' own variable wins over the general one, as in the SDK.
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if not protocol:
            continue
        if protocol not in _PROTOCOLS:
            raise TracingConfigError(
                f"{name}={protocol!r} is not supported: this gateway exports over "
                "http/protobuf (OTLP/HTTP, port 4318 on a collector)"
            )
        break
    _check_sampler(env)
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return bool(endpoint and endpoint.strip()) and exporter != "none"


def _check_sampler(env: Mapping[str, str]) -> None:
    # The SDK would log a warning and sample everything instead: said at start here.
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in _SAMPLERS:
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER={sampler!r} is not a sampler this gateway has "
            f"({', '.join(_SAMPLERS)})"
        )
    argument = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if argument and sampler.endswith("traceidratio"):
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise TracingConfigError(
                f"OTEL_TRACES_SAMPLER_ARG={argument!r}: the ratio of traces to sample is a "
                "number from 0 to 1"
            )


def _exporting_recorder(env: Mapping[str, str]) -> SpanRecorder:
    # Imported here: a gateway that exports nothing never loads the SDK's exporter (protobuf).
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from gateway.otlp_encoding import OTLPWireSpanExporter
    from gateway.span_recording import SpanRecorder

    resource = Resource.create(
        {
            "service.name": env.get("OTEL_SERVICE_NAME") or "finrelay",
            "service.version": __version__,
        }
    )
    # The provider is made for its sampler, which it reads from OTEL_TRACES_SAMPLER / _ARG;
    # spans are recorded without it (gateway/span_recording.py). shutdown_on_exit=False:
    # `Tracing.shutdown` bounds the wait; the SDK's exit hook would not.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    # The processor's queue is bounded (OTEL_BSP_MAX_QUEUE_SIZE, 2048 by default): spans beyond
    # it are dropped, never held in memory while a collector is down. The SDK's OTLP/HTTP
    # exporter, writing the protobuf itself (gateway/otlp_encoding.py): the SDK's encoder costs
    # as much as recording the span.
    return SpanRecorder.of(provider, BatchSpanProcessor(OTLPWireSpanExporter()))


def add_trace_ids(
    logger: object, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """structlog processor: the open span's `trace_id` and `span_id` on the line."""
    ids = _LOG_IDS.get()
    if ids is not None:
        event_dict["trace_id"], event_dict["span_id"] = ids
    return event_dict


class _EventTrace(msgspec.Struct):
    """The two CloudEvents distributed-tracing attributes of a stored event, and nothing else:
    decoding them skips the rest of the body without building it."""

    traceparent: str | None = None
    tracestate: str | None = None


_EVENT_TRACE = msgspec.json.Decoder(_EventTrace)


def event_trace(body: bytes) -> TraceContext | None:
    """The trace an event's body carries (its `traceparent` and `tracestate` members), as its
    deliveries continue it; None when it has none (stored with tracing off, or before it
    existed) or the body is not an object. Checked where it is used (`Tracing.span`)."""
    try:
        found = _EVENT_TRACE.decode(body)
    except msgspec.DecodeError:
        return None
    if found.traceparent is None:
        return None
    return TraceContext(found.traceparent, found.tracestate)

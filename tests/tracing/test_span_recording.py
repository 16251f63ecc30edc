"""Spans recorded without the SDK's span object end in the processor as the SDK's own would.

Each example plays one script (a span's name, kind, parent, links, attributes, events and
failure, under a sampler and span limits) through the SDK's tracer and through
`SpanRecorder`, with the same sampler, resource and limits, and compares what the in-memory
exporter got from each: everything but the span id and the times, which are each span's own.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceState

from gateway.span_recording import SpanRecorder

RESOURCE = Resource.create({"service.name": "finrelay-test"})
SCOPE = InstrumentationScope("finrelay", "9.9")

KEYS = st.sampled_from(
    ["http.response.status_code", "finrelay.source", "url.path", "error.type", "a", "b", "c", ""]
)
# Single values take the recorder's plain path; sequences, bytes and the empty key the SDK's
# cleaning (and both meet the span limits' string length).
SINGLE = st.one_of(
    st.text(max_size=40),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
)
VALUES = st.one_of(
    SINGLE,
    st.lists(st.text(max_size=12), max_size=3),
    st.tuples(st.integers(0, 9), st.integers(0, 9)),
    st.binary(max_size=4),
)
ATTRIBUTES = st.dictionaries(KEYS, VALUES, max_size=5)


@st.composite
def span_contexts(draw: st.DrawFn, *, remote: bool) -> trace.SpanContext:
    state = draw(st.one_of(st.none(), st.just(TraceState([("vendor", "x1"), ("other", "y")]))))
    return trace.SpanContext(
        draw(st.integers(1, 2**128 - 1)),
        draw(st.integers(1, 2**64 - 1)),
        is_remote=remote,
        trace_flags=trace.TraceFlags(draw(st.sampled_from([0, 1, 2, 3]))),
        trace_state=state,
    )


SAMPLERS: list[tuple[str, Sampler]] = [
    ("always_on", ALWAYS_ON),
    ("always_off", ALWAYS_OFF),
    ("parentbased_always_on", ParentBased(ALWAYS_ON)),
    ("parentbased_always_off", ParentBased(ALWAYS_OFF)),
    ("parentbased_traceidratio", ParentBased(TraceIdRatioBased(0.5))),
]

STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), ATTRIBUTES),
        st.tuples(st.just("event"), st.sampled_from(["verified", "normalized", "stored"])),
        st.tuples(st.just("fail"), st.sampled_from(["timeout", "503", "_OTHER"])),
    ),
    max_size=8,
)
LIMITS = st.one_of(
    st.just(SpanLimits()),
    st.builds(
        SpanLimits,
        max_span_attributes=st.integers(1, 4),
        max_events=st.integers(1, 3),
        max_links=st.integers(1, 2),
        max_span_attribute_length=st.integers(1, 8),
    ),
)


def _play(span: Any, steps: list[tuple[str, Any]], *, sdk: bool) -> None:
    for step, value in steps:
        if step == "set":
            span.set_attributes(value) if sdk else span.set(value)
        elif step == "event":
            span.add_event(value)
        elif sdk:
            span.set_attribute("error.type", value)
            span.set_status(Status(StatusCode.ERROR))
        else:
            span.fail(value)
    span.end()


def _seen(span: ReadableSpan) -> dict[str, object]:
    """What a collector would see of a span, but its own span id and times."""
    context = span.context
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind,
        "trace_id": context.trace_id if span.parent is not None else None,
        "flags": context.trace_flags,
        "trace_state": context.trace_state.to_header() if context.trace_state else "",
        "parent": span.parent,
        "attributes": dict(span.attributes or {}),
        "dropped_attributes": span.dropped_attributes,
        "events": [(event.name, dict(event.attributes or {})) for event in span.events],
        "dropped_events": span.dropped_events,
        "links": [link.context for link in span.links],
        "dropped_links": span.dropped_links,
        "status": span.status.status_code,
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
    }


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["POST /webhooks/{source}", "POST", "send orders"]),
    kind=st.sampled_from(list(SpanKind)),
    parent=st.one_of(st.none(), span_contexts(remote=True)),
    links=st.lists(span_contexts(remote=True), max_size=3),
    attributes=ATTRIBUTES,
    steps=STEPS,
    sampler=st.sampled_from(SAMPLERS),
    limits=LIMITS,
)
def test_a_recorded_span_is_what_the_sdk_would_have_exported(
    name: str,
    kind: SpanKind,
    parent: trace.SpanContext | None,
    links: list[trace.SpanContext],
    attributes: dict[str, Any],
    steps: list[tuple[str, Any]],
    sampler: tuple[str, Sampler],
    limits: SpanLimits,
) -> None:
    if parent is None and sampler[0] == "parentbased_traceidratio":
        parent = trace.SpanContext(7, 9, is_remote=True)  # one trace id, one decision for both
    sdk_exporter, ours_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    provider = TracerProvider(
        sampler=sampler[1], resource=RESOURCE, span_limits=limits, shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(sdk_exporter))
    tracer = provider.get_tracer(SCOPE.name, SCOPE.version)
    context = None if parent is None else trace.set_span_in_context(trace.NonRecordingSpan(parent))
    sdk_links = [Link(link) for link in links]
    sdk_span = tracer.start_span(name, context, kind, attributes=attributes, links=sdk_links)
    _play(sdk_span, steps, sdk=True)

    recorder = SpanRecorder(
        sampler=sampler[1],
        resource=RESOURCE,
        processor=SimpleSpanProcessor(ours_exporter),
        scope=SCOPE,
        limits=limits,
    )
    started = recorder.start(name, kind, parent, attributes, [Link(link) for link in links])
    if isinstance(started, trace.SpanContext):
        ours_context = started
    else:
        ours_context = started.context
        _play(started, steps, sdk=False)

    theirs = sdk_span.get_span_context()
    assert ours_context.trace_flags == theirs.trace_flags
    assert ours_context.trace_state == theirs.trace_state
    if parent is not None:
        assert ours_context.trace_id == theirs.trace_id == parent.trace_id
    assert [_seen(span) for span in ours_exporter.get_finished_spans()] == [
        _seen(span) for span in sdk_exporter.get_finished_spans()
    ]

"""gateway/tracing.py on its own: W3C Trace Context read as the OpenTelemetry API's propagator
reads it (fuzzed against it), the spans it makes in each way of running (the SDK's in-memory
exporter stands for a collector), the `OTEL_*` variables it refuses, and the canonical event's
tracing attributes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.span_recording import SpanRecorder
from gateway.tracing import (
    TRACESTATE_MAX_LENGTH,
    SpanKind,
    TraceContext,
    Tracing,
    TracingConfigError,
    add_trace_ids,
    check_environment,
)
from schemas.event import decode_event, encode_event
from schemas.jsonschema import canonical_event_schema
from tests.schemas.test_jsonschema import sample_event

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
STORED_PATTERN = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
REFERENCE = TraceContextTextMapPropagator()


@pytest.fixture
def exported() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    yield (
        Tracing(enabled=True, recorder=SpanRecorder.of(provider, SimpleSpanProcessor(exporter))),
        exporter,
    )
    provider.shutdown()


PROPAGATING = Tracing(enabled=True)


def reference_parent(headers: dict[str, str]) -> trace.SpanContext | None:
    """What the OpenTelemetry API's own propagator makes of the headers."""
    found = trace.get_current_span(REFERENCE.extract(headers)).get_span_context()
    return found if found.is_valid else None


# Reading W3C Trace Context, against the API's propagator.

HEX = "0123456789abcdef"
# What a header value can hold once decoded (latin-1): no line breaks or other controls but tab.
HEADER_TEXT = st.text(st.sampled_from(["\t", *map(chr, range(0x20, 0x100))]), max_size=80)


@st.composite
def traceparents(draw: st.DrawFn) -> str:
    """Valid ones (about half), near misses made of the header's parts, and arbitrary text."""
    valid_hex = st.text(st.sampled_from(HEX), min_size=32, max_size=32)
    if draw(st.booleans()):
        version = draw(st.sampled_from(["00", "00", "00", "01", "cc"]))
        trace_id, span_id = draw(valid_hex), draw(valid_hex)[:16]
        flags = draw(st.sampled_from(["00", "01", "02", "03", "ff"]))
        suffix = "-more" if version != "00" and draw(st.booleans()) else ""
        return f"{version}-{trace_id}-{span_id}-{flags}{suffix}"
    version = draw(st.sampled_from(["00", "01", "ff", "0g", "0", "Ab"]))
    trace_id = draw(
        st.one_of(
            valid_hex,
            st.just("0" * 32),
            st.text(st.sampled_from(HEX + "AG-"), min_size=30, max_size=34),
        )
    )
    span_id = draw(
        st.one_of(
            valid_hex.map(lambda text: text[:16]),
            st.just("0" * 16),
            st.text(st.sampled_from(HEX + "F"), min_size=15, max_size=17),
        )
    )
    flags = draw(st.one_of(st.text(st.sampled_from(HEX), min_size=2, max_size=2), HEADER_TEXT))
    suffix = draw(st.sampled_from(["", "-", "-more", " ", "\t ", "x"]))
    lead = draw(st.sampled_from(["", " ", "\t"]))
    made = f"{lead}{version}-{trace_id}-{span_id}-{flags}{suffix}"
    return draw(st.one_of(st.just(made), HEADER_TEXT, st.just(made * 10)))


VALID_KEYS = st.one_of(
    st.from_regex(r"[a-z][_0-9a-z\-*/]{0,8}", fullmatch=True),
    st.from_regex(r"[a-z0-9][a-z0-9]{0,4}@[a-z][a-z0-9]{0,3}", fullmatch=True),
)
VALID_VALUES = st.from_regex(r"[!-+\--<>-~][ -+\--<>-~]{0,40}[!-+\--<>-~]", fullmatch=True)
LONG_VALUES = st.from_regex(r"[a-z0-9]{40,150}", fullmatch=True)


@st.composite
def tracestates(draw: st.DrawFn) -> str:
    """Valid ones, long ones (to be cut), ones with a bad member, and arbitrary text."""
    kind = draw(st.sampled_from(["valid", "valid", "long", "mixed", "text"]))
    if kind == "text":
        return draw(HEADER_TEXT)
    values = VALID_VALUES if kind != "long" else LONG_VALUES
    pairs = draw(
        st.lists(
            st.tuples(VALID_KEYS, values),
            min_size=6 if kind == "long" else 0,
            max_size=34,
            unique_by=lambda pair: pair[0],
        )
    )
    members = [f"{key}={value}" for key, value in pairs]
    if kind == "mixed":
        members += draw(st.lists(st.one_of(HEADER_TEXT, st.sampled_from(["", " "])), max_size=3))
        members = draw(st.permutations(members))
    separator = draw(st.sampled_from([",", ", ", " ,", ",\t", ",,"]))
    return separator.join(members)


def check_against_reference(headers: dict[str, str], got: TraceContext | None) -> None:
    assert got is not None
    assert STORED_PATTERN.fullmatch(got.traceparent)
    assert got.tracestate is None or 0 < len(got.tracestate) <= TRACESTATE_MAX_LENGTH
    expected = reference_parent(headers)
    if expected is None:
        # A new trace: nothing of the header's.
        assert got.tracestate is None
        return
    assert got.trace_id == f"{expected.trace_id:032x}"
    assert got.traceparent[36:52] != f"{expected.span_id:016x}"
    assert int(got.traceparent[53:], 16) & 1 == expected.trace_flags & 1
    state = expected.trace_state.to_header() if expected.trace_state else ""
    if len(state) <= TRACESTATE_MAX_LENGTH:
        assert got.tracestate == (state or None)
    else:
        # Cut W3C's way: what is left is some of the members, in their order.
        assert got.tracestate is not None
        members = state.split(",")
        kept = got.tracestate.split(",")
        assert all(member in members for member in kept)
        assert kept == sorted(kept, key=members.index)


@settings(max_examples=400, deadline=None)
@given(traceparent=traceparents(), tracestate=st.one_of(st.none(), tracestates()))
def test_any_header_continues_exactly_when_the_api_would(
    traceparent: str, tracestate: str | None
) -> None:
    headers = {"traceparent": traceparent}
    if tracestate is not None:
        headers["tracestate"] = tracestate
    with PROPAGATING.span("POST /webhooks/{source}", SpanKind.SERVER, parent=headers) as span:
        check_against_reference(headers, span.context)


@settings(max_examples=150, deadline=None)
@given(traceparent=traceparents(), tracestate=st.one_of(st.none(), tracestates()))
def test_any_header_gives_the_sdk_the_parent_the_api_would(
    traceparent: str, tracestate: str | None
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    tracing = Tracing(
        enabled=True, recorder=SpanRecorder.of(provider, SimpleSpanProcessor(exporter))
    )
    headers = {"traceparent": traceparent}
    if tracestate is not None:
        headers["tracestate"] = tracestate
    with tracing.span("POST /webhooks/{source}", SpanKind.SERVER, parent=headers) as span:
        context = span.context
    check_against_reference(headers, context)
    expected = reference_parent(headers)
    if expected is not None and not expected.trace_flags.sampled:
        assert exporter.get_finished_spans() == ()
        return
    (finished,) = exporter.get_finished_spans()
    if expected is None:
        assert finished.parent is None
    else:
        assert finished.parent is not None
        assert finished.parent.span_id == expected.span_id


def test_no_traceparent_is_a_new_trace_whatever_the_tracestate() -> None:
    headers = {"tracestate": "rojo=00f067aa0ba902b7", "content-type": "application/json"}
    with PROPAGATING.span("x", SpanKind.SERVER, parent=headers) as span:
        assert span.context is not None
        assert span.context.tracestate is None
        assert span.context.traceparent.endswith("-03")  # sampled, random trace id


def test_new_traces_and_spans_get_new_ids() -> None:
    contexts = []
    for _ in range(200):
        with PROPAGATING.span("x", SpanKind.SERVER, parent=None) as span:
            assert span.context is not None
            contexts.append(span.context.traceparent)
    assert len({c[3:35] for c in contexts}) == len({c[36:52] for c in contexts}) == 200


def test_a_stored_context_is_continued() -> None:
    stored = TraceContext(TRACEPARENT, "congo=t61rcWkgMzE")
    with PROPAGATING.span("attempt", SpanKind.CLIENT, parent=stored) as span:
        assert span.context is not None
        assert span.context.trace_id == stored.trace_id
        assert span.context.tracestate == stored.tracestate
        assert span.context.headers() == {
            "traceparent": span.context.traceparent,
            "tracestate": "congo=t61rcWkgMzE",
        }


# Spans, exported.


def test_an_exported_span_is_the_context_it_gives(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    headers = {"traceparent": TRACEPARENT, "tracestate": "rojo=1, congo=2"}
    with tracing.span(
        "POST /webhooks/{source}", SpanKind.SERVER, parent=headers, attributes={"a": 1}
    ) as span:
        span.set({"b": "two"})
        span.event("verified")
        context = span.context
    (finished,) = exporter.get_finished_spans()
    assert context is not None
    assert context.traceparent == (
        f"00-{finished.context.trace_id:032x}-{finished.context.span_id:016x}-01"
    )
    assert context.tracestate == "rojo=1,congo=2"
    assert finished.parent is not None
    assert f"{finished.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert finished.kind == trace.SpanKind.SERVER
    assert dict(finished.attributes or {}) == {"a": 1, "b": "two"}
    assert [event.name for event in finished.events] == ["verified"]
    assert finished.status.status_code == StatusCode.UNSET


def test_a_failed_span_has_its_error_type_and_status(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    with tracing.span("x", SpanKind.CLIENT, parent=None) as span:
        span.fail("timeout")
    with pytest.raises(ZeroDivisionError), tracing.span("y", SpanKind.CLIENT, parent=None):
        _ = 1 / 0
    first, second = exporter.get_finished_spans()
    assert (first.attributes or {})["error.type"] == "timeout"
    assert first.status.status_code == StatusCode.ERROR
    assert (second.attributes or {})["error.type"] == "ZeroDivisionError"


def test_a_new_trace_links_to_the_events_trace(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    event_trace = TraceContext(TRACEPARENT)
    replay = tracing.new_trace("replay", event_trace)
    assert replay is not None
    assert replay.trace_id != event_trace.trace_id
    (root,) = exporter.get_finished_spans()
    (link,) = root.links
    assert f"{link.context.trace_id:032x}" == event_trace.trace_id
    # An invalid link is left out, never an error.
    tracing.new_trace("replay", TraceContext("00-nonsense"))
    assert exporter.get_finished_spans()[-1].links == ()


def test_disabled_tracing_gives_no_context_and_no_log_ids() -> None:
    disabled = Tracing.from_environment({"OTEL_SDK_DISABLED": "TRUE"})
    with disabled.span("x", SpanKind.SERVER, parent={"traceparent": TRACEPARENT}) as span:
        assert span.context is None
        assert not span.recording
        assert add_trace_ids(None, "info", {}) == {}
    assert disabled.new_trace("replay", TraceContext(TRACEPARENT)) is None


def test_log_lines_inside_a_span_carry_its_ids() -> None:
    with PROPAGATING.span("x", SpanKind.SERVER, parent={"traceparent": TRACEPARENT}) as outer:
        assert outer.context is not None
        with PROPAGATING.span("y", SpanKind.CLIENT, parent=outer.context) as inner:
            assert inner.context is not None
            fields = add_trace_ids(None, "info", {})
            assert fields == {
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "span_id": inner.context.traceparent[36:52],
            }
        assert add_trace_ids(None, "info", {})["span_id"] == outer.context.traceparent[36:52]
    assert add_trace_ids(None, "info", {}) == {}


# The environment.


def test_the_three_ways_of_running() -> None:
    assert not Tracing.from_environment({"OTEL_SDK_DISABLED": "true"}).enabled
    propagating = Tracing.from_environment({})
    assert propagating.enabled
    assert not propagating.exporting
    none = Tracing.from_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert not none.exporting
    exporting = Tracing.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert exporting.exporting
    exporting.shutdown(0.5)


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "'http/json' is not supported"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": ""},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='grpc'",
        ),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTLP only"),
        ({"OTEL_TRACES_SAMPLER": "often"}, "'often' is not a sampler"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "a number from 0 to 1",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"},
            "a number from 0 to 1",
        ),
    ],
)
def test_variables_it_cannot_follow_are_refused(environ: dict[str, str], words: str) -> None:
    with pytest.raises(TracingConfigError, match=re.escape(words)):
        check_environment(environ)
    with pytest.raises(TracingConfigError):
        Tracing.from_environment(environ)
    # Unless the SDK is off: then none of them is read.
    check_environment({**environ, "OTEL_SDK_DISABLED": "true"})


def test_variables_it_can_follow_pass() -> None:
    check_environment(
        {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",  # the traces' own one wins
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_TRACES_EXPORTER": "otlp",
        }
    )


# The canonical event's Distributed Tracing attributes.


def test_an_event_with_a_trace_validates_against_the_schema() -> None:
    event = msgspec.structs.replace(
        sample_event("finfusion"), traceparent=TRACEPARENT, tracestate="congo=t61rcWkgMzE"
    )
    document = json.loads(encode_event(event))
    jsonschema.Draft202012Validator(canonical_event_schema()).validate(document)
    assert decode_event(encode_event(event)) == event
    without = json.loads(encode_event(sample_event("finfusion")))
    assert "traceparent" not in without
    assert "tracestate" not in without


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("traceparent", TRACEPARENT.upper()),
        ("traceparent", None),
        ("tracestate", ""),
        ("tracestate", "a=" + "b" * 511),
    ],
)
def test_the_schema_and_decoder_refuse_a_bad_trace(field: str, value: object) -> None:
    document = json.loads(encode_event(sample_event("finfusion")))
    document[field] = value
    validator = jsonschema.Draft202012Validator(canonical_event_schema())
    assert list(validator.iter_errors(document))
    with pytest.raises(msgspec.ValidationError):
        decode_event(json.dumps(document).encode())


def test_api_trace_state_agrees_with_what_is_kept() -> None:
    # The SDK rebuilds a TraceState from what the gateway kept: nothing is lost on the way.
    kept = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,a@b=c"
    assert TraceState.from_header([kept]).to_header() == kept

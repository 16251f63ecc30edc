"""gateway/otlp_encoding.py: spans written straight into OTLP's wire format decode to what the
SDK's own encoder builds, field for field, for spans the SDK recorded (generated: names,
attributes of every type, events, links, statuses, parents, limits that drop things, several
resources and scopes); and its exporter sends them over the SDK's HTTP client."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TraceState
from opentelemetry.util.types import AttributeValue

from gateway.otlp_encoding import OTLPWireSpanExporter, encode_export_request
from tests.tracing.otlp_receiver import OtlpReceiver

# Text as attributes and names carry it: any character protobuf can write (no lone surrogates).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
KEYS = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
INT64 = st.integers(-(2**63), 2**63 - 1)
FLOATS = st.floats(allow_nan=False)  # NaN is never equal to itself, decoded or not
SCALARS: list[st.SearchStrategy[AttributeValue]] = [TEXT, st.booleans(), INT64, FLOATS]
VALUES = st.one_of(
    *SCALARS,
    st.one_of(*[st.lists(scalar, max_size=4).map(tuple) for scalar in SCALARS]),
    st.sampled_from(["GET", "POST", "accepted", "finfusion", ""]),  # repeated: the caches
    st.sampled_from([0, 1, 200, 202, -1, 2**40]),
)
ATTRIBUTES = st.dictionaries(KEYS | st.sampled_from(["http.route", "a"]), VALUES, max_size=6)
IDS_128, IDS_64 = st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1)
TRACE_STATES = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
        st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True),
    ),
    max_size=3,
    unique_by=lambda pair: pair[0],
).map(TraceState)
TIMES = st.integers(1, 2**63)
CONTEXTS = st.builds(
    trace.SpanContext,
    trace_id=IDS_128,
    span_id=IDS_64,
    is_remote=st.booleans(),
    trace_flags=st.sampled_from([trace.TraceFlags(0), trace.TraceFlags(1)]),
    trace_state=TRACE_STATES,
)
LINKS = st.builds(Link, CONTEXTS, st.none() | ATTRIBUTES)
STATUSES = st.sampled_from([StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR]).flatmap(
    lambda code: st.builds(Status, st.just(code), st.none() | TEXT)
)
EVENTS = st.lists(st.tuples(TEXT, st.none() | ATTRIBUTES, TIMES), max_size=4)
LIMITS = st.sampled_from(
    [
        SpanLimits(),
        SpanLimits(max_span_attributes=2, max_events=1, max_links=1),
        SpanLimits(max_event_attributes=1, max_link_attributes=1, max_attribute_length=3),
    ]
)
RESOURCES = st.builds(
    Resource, st.dictionaries(KEYS, VALUES, max_size=3), st.none() | st.just("https://schema")
)
SCOPES = st.tuples(TEXT, st.none() | TEXT, st.none() | st.just("https://scope"))


def resource_keys(resource: Resource) -> tuple[frozenset[str], str]:
    return frozenset(resource.attributes), resource.schema_url


class DrawnIds(IdGenerator):
    """Span and trace ids drawn by Hypothesis (the SDK's own come from `random`)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self._draw = draw

    def generate_span_id(self) -> int:
        return self._draw(IDS_64)

    def generate_trace_id(self) -> int:
        return self._draw(IDS_128)


@st.composite
def recorded_spans(draw: st.DrawFn) -> list[ReadableSpan]:
    """Spans as the SDK records them, from one or two providers (resources) and one or two
    tracers (scopes) each, in an interleaved order."""
    spans: list[ReadableSpan] = []
    # Distinct resources, or one twice (equal: the SDK puts their spans together). Not two
    # equal ones with their attributes in another order: the SDK writes the first one's order,
    # ours the first it ever saw (a process has one resource).
    resources = draw(st.lists(RESOURCES, min_size=1, max_size=2, unique_by=resource_keys))
    if draw(st.booleans()):
        resources.append(Resource(dict(resources[0].attributes), resources[0].schema_url))
    for resource in resources:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(
            sampler=ALWAYS_ON,
            resource=resource,
            span_limits=draw(LIMITS),
            id_generator=DrawnIds(draw),
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for name, version, schema_url in draw(st.lists(SCOPES, min_size=1, max_size=2)):
            tracer = provider.get_tracer(name, version, schema_url)
            for _ in range(draw(st.integers(1, 3))):
                record_span(draw, tracer)
        spans += exporter.get_finished_spans()
    return draw(st.permutations(spans))


def record_span(draw: st.DrawFn, tracer: trace.Tracer) -> None:
    parent = draw(st.none() | CONTEXTS)
    context = None if parent is None else trace.set_span_in_context(trace.NonRecordingSpan(parent))
    start = draw(TIMES)
    span = tracer.start_span(
        draw(TEXT),
        context,
        draw(st.sampled_from(list(SpanKind))),
        attributes=draw(ATTRIBUTES),
        links=draw(st.lists(LINKS, max_size=3)),
        start_time=start,
    )
    for name, attributes, timestamp in draw(EVENTS):
        span.add_event(name, attributes, timestamp)
    span.set_attributes(draw(ATTRIBUTES))  # after the start, as the gateway sets most
    span.set_status(draw(STATUSES))
    span.end(draw(st.integers(start, 2**64 - 1)))


def sdk_request(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """What the SDK's encoder makes of `spans`, plus each link's `trace_state`: OTLP's Link has
    it, the SDK's encoder leaves it out, ours writes it."""
    request = encode_spans(spans)
    # The spans in the request's order: by resource, then scope, as the SDK groups them.
    groups: dict[Resource, dict[InstrumentationScope | None, list[ReadableSpan]]] = {}
    for span in spans:
        by_scope = groups.setdefault(span.resource, {})
        by_scope.setdefault(span.instrumentation_scope, []).append(span)
    ordered = [span for scopes in groups.values() for group in scopes.values() for span in group]
    encoded = [
        span
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    for encoded_span, span in zip(encoded, ordered, strict=True):
        for encoded_link, link in zip(encoded_span.links, span.links, strict=True):
            encoded_link.trace_state = link.context.trace_state.to_header()
    return request


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recorded_spans())
def test_wire_encoding_decodes_to_the_sdks_request(spans: list[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_export_request(spans))
    expected = sdk_request(spans)
    assert str(ours) == str(expected)  # text format: a readable difference first
    assert ours == expected


def gateway_like_spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=ALWAYS_ON, resource=Resource.create({"service.name": "finrelay"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("finrelay", "1.0")
    caller = trace.SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True)
    with tracer.start_as_current_span(
        "POST /webhooks/{source}",
        trace.set_span_in_context(trace.NonRecordingSpan(caller)),
        SpanKind.SERVER,
        attributes={"http.request.method": "POST", "http.route": "/webhooks/{source}"},
    ) as server:
        server.add_event("stored")
        server.set_attributes({"http.response.status_code": 202, "finrelay.outcome": "accepted"})
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT) as attempt:
            attempt.set_status(Status(StatusCode.ERROR, "503"))
    return list(exporter.get_finished_spans())


def test_a_wrong_field_is_caught() -> None:
    """The comparison above sees one field off: here the attempt's status message."""
    spans = gateway_like_spans()
    ours = ExportTraceServiceRequest.FromString(encode_export_request(spans))
    assert ours == sdk_request(spans)
    ours.resource_spans[0].scope_spans[0].spans[0].status.message = "504"
    assert ours != sdk_request(spans)


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_the_exporter_sends_the_spans_to_a_collector(compression: Compression) -> None:
    spans = gateway_like_spans()
    with OtlpReceiver() as receiver:
        exporter = OTLPWireSpanExporter(
            endpoint=f"{receiver.endpoint}/v1/traces", compression=compression
        )
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        received = receiver.spans()
        exporter.shutdown()
    assert [(span.name, span.kind) for span in received] == [
        ("POST", "client"),
        ("POST /webhooks/{source}", "server"),
    ]
    assert received[1].attributes == {
        "http.request.method": "POST",
        "http.route": "/webhooks/{source}",
        "http.response.status_code": 202,
        "finrelay.outcome": "accepted",
    }
    assert received[1].events == ("stored",)
    assert received[0].parent_span_id == f"{spans[1].context.span_id:016x}"
    assert received[0].service_name == "finrelay"


def test_the_exporter_reports_a_collector_refusing() -> None:
    with OtlpReceiver(status=400) as receiver:
        exporter = OTLPWireSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        assert exporter.export(gateway_like_spans()) is SpanExportResult.FAILURE
        exporter.shutdown()


def test_the_exporter_drops_a_batch_over_the_size_limit() -> None:
    with OtlpReceiver() as receiver:
        exporter = OTLPWireSpanExporter(
            endpoint=f"{receiver.endpoint}/v1/traces", max_request_size=100
        )
        assert exporter.export(gateway_like_spans()) is SpanExportResult.FAILURE
        assert receiver.requests == 0
        exporter.shutdown()


def test_the_exporter_refuses_after_shutdown() -> None:
    exporter = OTLPWireSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    exporter.shutdown()
    assert exporter.export(gateway_like_spans()) is SpanExportResult.FAILURE

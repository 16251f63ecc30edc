"""An attempt's span, piece by piece (gateway/delivery/attempt_trace.py), recorded by the SDK's
in-memory exporter: where it belongs (the event's trace, or a replay's with a link to the
event's), what it says, and what it costs nothing to leave out when nothing records."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.delivery.attempt_trace import end_attempt_span, error_type, start_attempt_span
from gateway.delivery.decide import Delivered, RetryAt
from gateway.delivery.file import FileTransport
from gateway.delivery.http import HttpTransport, url_for_traces
from gateway.delivery.transport import SendResult, Transport
from gateway.span_recording import SpanRecorder
from gateway.store.base import ClaimedDelivery
from gateway.tracing import Tracing, event_trace

EVENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
EVENT_SPAN = "b7ad6b7169203331"
EVENT_PARENT = f"00-{EVENT_TRACE}-{EVENT_SPAN}-01"
REPLAY_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REPLAY_SPAN = "00f067aa0ba902b7"
REPLAY_PARENT = f"00-{REPLAY_TRACE}-{REPLAY_SPAN}-01"


def body(**trace: str) -> bytes:
    return msgspec.json.encode(
        {"specversion": "1.0", "id": "evt_1", "type": "payment.succeeded", **trace, "data": {}}
    )


def delivery(
    event_body: bytes, *, attempts: int = 0, traceparent: str | None = None
) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=1,
        event_id="evt_1",
        subscriber="ledger",
        attempts=attempts,
        created_at=0.0,
        due_at=0.0,
        lease_token=1,
        body=event_body,
        source="finchpay",
        event_type="payment.succeeded",
        traceparent=traceparent,
    )


@pytest.fixture
def exported() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    yield (
        Tracing(enabled=True, recorder=SpanRecorder.of(provider, SimpleSpanProcessor(exporter))),
        exporter,
    )
    provider.shutdown()


@pytest.fixture
def http() -> Iterator[Transport]:
    runner = asyncio.Runner()
    transport = runner.run(_http_transport())
    yield transport
    runner.run(transport.close())
    runner.close()


async def _http_transport() -> Transport:
    return HttpTransport("https://user:pw@hooks.example.com:8443/in?token=s3cret&x", 5.0, 1)


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def test_an_attempt_is_a_child_of_the_events_span(
    exported: tuple[Tracing, InMemorySpanExporter], http: Transport
) -> None:
    tracing, exporter = exported
    with start_attempt_span(
        tracing, http, "ledger", "http", delivery(body(traceparent=EVENT_PARENT))
    ) as span:
        assert span.context is not None
        end_attempt_span(span, SendResult(outcome="delivered", status_code=204), Delivered())
    recorded = only_span(exporter)
    assert recorded.parent is not None
    assert f"{recorded.context.trace_id:032x}" == EVENT_TRACE
    assert f"{recorded.parent.span_id:016x}" == EVENT_SPAN
    # What goes out with the message is this span's own context.
    assert span.context.traceparent == (f"00-{EVENT_TRACE}-{recorded.context.span_id:016x}-01")
    assert recorded.name == "POST"
    assert recorded.kind is SpanKind.CLIENT
    assert recorded.links == ()
    assert dict(recorded.attributes or {}) == {
        "finrelay.subscriber": "ledger",
        "finrelay.subscriber_kind": "http",
        "finrelay.attempt": 1,
        "finrelay.outcome": "delivered",
        "http.request.method": "POST",
        "http.response.status_code": 204,
        "url.full": "https://REDACTED:REDACTED@hooks.example.com:8443/in?token=REDACTED&x",
        "server.address": "hooks.example.com",
        "server.port": 8443,
    }
    assert recorded.status.status_code is StatusCode.UNSET


def test_a_retried_attempt_says_its_number_its_resend_count_and_its_error(
    exported: tuple[Tracing, InMemorySpanExporter], http: Transport
) -> None:
    tracing, exporter = exported
    claimed = delivery(body(traceparent=EVENT_PARENT), attempts=2)
    with start_attempt_span(tracing, http, "ledger", "http", claimed) as span:
        end_attempt_span(
            span, SendResult(outcome="retry", status_code=503, error="HTTP 503"), RetryAt(at=1.0)
        )
    attributes = dict(only_span(exporter).attributes or {})
    assert attributes["finrelay.attempt"] == 3
    assert attributes["http.request.resend_count"] == 2
    assert attributes["finrelay.outcome"] == "retry"
    assert attributes["error.type"] == "503"
    assert only_span(exporter).status.status_code is StatusCode.ERROR


def test_a_replayed_delivery_belongs_to_the_replays_trace_and_links_to_the_events(
    exported: tuple[Tracing, InMemorySpanExporter], tmp_path: Path
) -> None:
    tracing, exporter = exported
    claimed = delivery(body(traceparent=EVENT_PARENT), traceparent=REPLAY_PARENT)
    with start_attempt_span(tracing, FileTransport(tmp_path / "x"), "audit", "file", claimed):
        pass
    recorded = only_span(exporter)
    assert f"{recorded.context.trace_id:032x}" == REPLAY_TRACE
    assert recorded.parent is not None
    assert f"{recorded.parent.span_id:016x}" == REPLAY_SPAN
    ((link_trace, link_span),) = [
        (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") for link in recorded.links
    ]
    assert (link_trace, link_span) == (EVENT_TRACE, EVENT_SPAN)
    assert recorded.kind is SpanKind.INTERNAL
    assert recorded.name == "write"


def test_an_event_stored_without_a_trace_starts_one(
    exported: tuple[Tracing, InMemorySpanExporter], tmp_path: Path
) -> None:
    tracing, exporter = exported
    with start_attempt_span(
        tracing, FileTransport(tmp_path / "x"), "audit", "file", delivery(body())
    ) as span:
        assert span.context is not None
    assert only_span(exporter).parent is None


def test_without_an_endpoint_the_attempt_still_gets_a_span_id_in_the_events_trace(
    http: Transport,
) -> None:
    tracing = Tracing(enabled=True)
    claimed = delivery(body(traceparent=EVENT_PARENT, tracestate="vendor=1"))
    with start_attempt_span(tracing, http, "ledger", "http", claimed) as span:
        assert not span.recording
        end_attempt_span(span, SendResult(outcome="delivered"), Delivered())
    assert span.context is not None
    assert span.context.trace_id == EVENT_TRACE
    assert span.context.traceparent[36:52] != EVENT_SPAN
    assert span.context.tracestate == "vendor=1"


def test_disabled_tracing_gives_no_context(http: Transport) -> None:
    tracing = Tracing(enabled=False)
    claimed = delivery(body(traceparent=EVENT_PARENT))
    with start_attempt_span(tracing, http, "ledger", "http", claimed) as span:
        assert span.context is None


@pytest.mark.parametrize(
    ("result", "word"),
    [
        (SendResult(outcome="retry", status_code=500, error="HTTP 500"), "500"),
        (SendResult(outcome="failed", status_code=404, error="HTTP 404"), "404"),
        (SendResult(outcome="retry", error="timeout"), "timeout"),
        (SendResult(outcome="retry", error="NATS timeout: no PubAck"), "timeout"),
        (
            SendResult(outcome="retry", error="connection error: ClientConnectorError"),
            "connection_error",
        ),
        (
            SendResult(outcome="retry", error="Redis refused the XADD: WRONGTYPE x"),
            "redis_refused_the_xadd",
        ),
        (
            SendResult(outcome="retry", error="the exchange 'events' does not exist"),
            "the_exchange_does_not_exist",
        ),
        (
            SendResult(outcome="retry", error="no JetStream stream captures 'a.b'"),
            "no_jetstream_stream_captures",
        ),
        (
            SendResult(outcome="retry", error="RabbitMQ refused the message (basic.nack)"),
            "rabbitmq_refused_the_message",
        ),
        (
            SendResult(outcome="retry", error="cannot write /srv/secret/x.jsonl: No space"),
            "cannot_write",
        ),
        (SendResult(outcome="retry", error="unexpected error: ValueError"), "unexpected_error"),
        (SendResult(outcome="retry"), "_OTHER"),
    ],
)
def test_error_type_is_a_short_word_without_what_follows_a_colon(
    result: SendResult, word: str
) -> None:
    assert error_type(result) == word


def test_url_for_traces_redacts_credentials_and_query_values() -> None:
    assert url_for_traces("https://a:b@h.example/p?k=v&t=1") == (
        "https://REDACTED:REDACTED@h.example/p?k=REDACTED&t=REDACTED"
    )
    assert url_for_traces("https://token@h.example/p") == "https://REDACTED:REDACTED@h.example/p"
    assert url_for_traces("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080/hook"


def test_event_trace_reads_only_the_two_members() -> None:
    context = event_trace(body(traceparent=EVENT_PARENT, tracestate="a=1"))
    assert context is not None
    assert (context.traceparent, context.tracestate) == (EVENT_PARENT, "a=1")
    assert event_trace(body()) is None
    assert event_trace(b"[1, 2]") is None
    assert event_trace(b"not json") is None

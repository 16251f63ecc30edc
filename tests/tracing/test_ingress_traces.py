"""The webhook request's trace (docs/reference/traces.md), against a real `gateway serve` exporting
to a real OTLP/HTTP receiver: the server span, its attributes and events, the `traceparent` stored
with the event, the request's log line, and the three ways of running (exporting, propagating only,
disabled), and what the gateway does when the collector is down or the variables ask for what it
does not have.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from adapters import finfusion
from adapters.samples import sample_body
from tests.service.harness import BASE_CONFIG, REPO, GatewayProcess, free_port
from tests.support import SECRET, TOKEN
from tests.tracing.otlp_receiver import OtlpReceiver, ReceivedSpan

# A batch provider (docs/reference/providers.md `each`): every event of one request carries its
# span.
CONFIG = (
    BASE_CONFIG
    + f"""
[providers.batchly.signature]
scheme = "none"

[providers.batchly.event]
each = "events"
id = "event_id"
type = "kind"

[providers.batchly.types]
"charge.paid" = "payment.succeeded"

[sources.batchly]
adapter = "batchly"
token = "{TOKEN}"
"""
)
# Spans leave the gateway 50 ms after they end, not the SDK's 5 s.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}
SPAN_NAME = "POST /webhooks/{source}"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER_STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def traceparent(trace_id: str = CALLER_TRACE, span_id: str = CALLER_SPAN, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


def new_trace_id() -> str:
    return secrets.token_hex(16)


def post_payment(gateway: GatewayProcess, **headers: str) -> httpx.Response:
    """A new, signed FinFusion payment, with `headers` (underscores as dashes)."""
    body = sample_body("finfusion", "payment.succeeded", datetime.now(UTC))
    signed = finfusion.sign_finfusion(body, SECRET, datetime.now(UTC))
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    return gateway.post("finfusion-main", body, headers={**signed, **extra})


def stored(gateway: GatewayProcess, event_id: str) -> dict[str, Any]:
    record = gateway.event_record(event_id)
    assert record is not None, event_id
    document: dict[str, Any] = msgspec.json.decode(record.body)
    return document


def server_span(receiver: OtlpReceiver, trace_id: str) -> ReceivedSpan:
    """The one webhook span of `trace_id`, once it has arrived."""
    spans = receiver.wait_for(
        lambda spans: any(s.trace_id == trace_id and s.name == SPAN_NAME for s in spans)
    )
    (span,) = [s for s in spans if s.trace_id == trace_id and s.name == SPAN_NAME]
    return span


def span_of_event(receiver: OtlpReceiver, event_id: str) -> ReceivedSpan:
    spans = receiver.wait_for(
        lambda spans: any(s.attributes.get("finrelay.event_id") == event_id for s in spans)
    )
    (span,) = [s for s in spans if s.attributes.get("finrelay.event_id") == event_id]
    return span


def webhook_line(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    """The request's `webhook` log line."""
    gateway.logs_once_they_say(request_id)
    for line in gateway.logs().splitlines():
        if request_id in line and line.startswith("{"):
            fields: dict[str, Any] = json.loads(line)
            if fields.get("event") == "webhook" and fields.get("request_id") == request_id:
                return fields
    raise AssertionError(f"no webhook line for {request_id}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[GatewayProcess]:
    """Exporting every span to `receiver`, as a gateway configured with nothing but an endpoint."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **FAST_EXPORT}
    process = GatewayProcess(tmp_path_factory.mktemp("exporting"), CONFIG, env=env).start()
    yield process
    process.stop()


# Exporting: the server span.


def test_webhook_span_continues_the_callers_trace(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    trace_id = new_trace_id()
    answer = post_payment(gateway, traceparent=traceparent(trace_id), tracestate=CALLER_STATE)
    assert answer.status_code == 200, answer.text
    event_id = answer.json()["id"]

    span = server_span(receiver, trace_id)
    assert span.parent_span_id == CALLER_SPAN
    assert span.kind == "server"
    assert span.service_name == "finrelay"
    assert span.attributes == {
        "http.request.method": "POST",
        "http.route": "/webhooks/{source}",
        "url.scheme": "http",
        "url.path": "/webhooks/finfusion-main",
        "http.response.status_code": 200,
        "client.address": "127.0.0.1",
        "finrelay.source": "finfusion-main",
        "finrelay.adapter": "finfusion",
        "finrelay.outcome": "accepted",
        "finrelay.event_id": event_id,
    }
    assert span.events == ("verified", "normalized", "stored")
    assert span.status_code == 0  # unset: nothing failed

    # The event carries the span's own context (CloudEvents Distributed Tracing extension),
    # the caller's tracestate with it, as extension attributes before `data`.
    event = stored(gateway, event_id)
    assert event["traceparent"] == f"00-{trace_id}-{span.span_id}-01"
    assert event["tracestate"] == CALLER_STATE
    assert list(event)[-3:] == ["traceparent", "tracestate", "data"]


def test_webhook_log_line_carries_the_spans_ids(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    trace_id = new_trace_id()
    answer = post_payment(gateway, traceparent=traceparent(trace_id))
    span = server_span(receiver, trace_id)
    line = webhook_line(gateway, answer.headers["x-request-id"])
    assert (line["trace_id"], line["span_id"]) == (trace_id, span.span_id)
    assert line["outcome"] == "accepted"


def test_without_traceparent_the_webhook_starts_a_trace(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    answer = post_payment(gateway)
    assert answer.status_code == 200
    event_id = answer.json()["id"]
    span = span_of_event(receiver, event_id)
    assert span.parent_span_id == ""
    assert stored(gateway, event_id)["traceparent"] == f"00-{span.trace_id}-{span.span_id}-03"
    assert "tracestate" not in stored(gateway, event_id)


@pytest.mark.parametrize(
    "header",
    [
        traceparent(trace_id="4BF92F3577B34DA6A3CE929D0E0E4736"),  # upper-case hex
        traceparent(trace_id="4bf92f3577b34da6a3ce929d0e0e473g"),  # not hex
        traceparent(trace_id="0" * 32),
        traceparent(span_id="0" * 16),
        "ff" + traceparent()[2:],  # version ff is forbidden
        traceparent() + "-extra",  # version 00 has four fields exactly
        traceparent() + "0",  # too long
        traceparent()[:-1],  # too short
        "00-" + CALLER_TRACE + "-" + CALLER_SPAN,  # no flags
        "x" * 600,
        "",
    ],
    ids=[
        "upper-case",
        "bad-hex",
        "zero-trace-id",
        "zero-span-id",
        "version-ff",
        "extra-field",
        "too-long",
        "too-short",
        "no-flags",
        "huge",
        "empty",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(
    gateway: GatewayProcess, receiver: OtlpReceiver, header: str
) -> None:
    answer = post_payment(gateway, traceparent=header, tracestate=CALLER_STATE)
    assert answer.status_code == 200, answer.text
    event_id = answer.json()["id"]
    span = span_of_event(receiver, event_id)
    assert span.trace_id != CALLER_TRACE.lower()
    assert span.parent_span_id == ""
    event = stored(gateway, event_id)
    assert event["traceparent"] == f"00-{span.trace_id}-{span.span_id}-03"
    # The tracestate belonged to the invalid parent: it goes with it.
    assert "tracestate" not in event


def test_a_future_version_traceparent_is_continued_as_version_00(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    # W3C: a newer version may append fields; its first four are read as version 00's.
    trace_id = new_trace_id()
    answer = post_payment(gateway, traceparent=f"cc-{trace_id}-{CALLER_SPAN}-01-what-comes-next")
    span = server_span(receiver, trace_id)
    assert span.parent_span_id == CALLER_SPAN
    assert stored(gateway, answer.json()["id"])["traceparent"].startswith(f"00-{trace_id}-")


def test_an_invalid_tracestate_is_dropped_and_the_traceparent_kept(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    trace_id = new_trace_id()
    answer = post_payment(gateway, traceparent=traceparent(trace_id), tracestate="Not Valid=1")
    span = server_span(receiver, trace_id)
    event = stored(gateway, answer.json()["id"])
    assert event["traceparent"] == f"00-{trace_id}-{span.span_id}-01"
    assert "tracestate" not in event


def test_several_tracestate_lines_are_one_list_and_the_first_traceparent_counts(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    trace_id, other = new_trace_id(), new_trace_id()
    body = sample_body("finfusion", "payment.succeeded", datetime.now(UTC))
    signed = finfusion.sign_finfusion(body, SECRET, datetime.now(UTC))
    answer = gateway.post(
        "finfusion-main",
        body,
        headers=[
            *signed.items(),
            ("traceparent", traceparent(trace_id)),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("traceparent", traceparent(other)),
            ("tracestate", "rojo=00f067aa0ba902b7, vendor@x=1"),
        ],
    )
    span = server_span(receiver, trace_id)
    event = stored(gateway, answer.json()["id"])
    assert event["traceparent"] == f"00-{trace_id}-{span.span_id}-01"
    assert event["tracestate"] == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,vendor@x=1"


def test_a_long_tracestate_is_cut_to_512_characters_the_w3c_way(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    # W3C: entries over 128 characters go first, then entries from the end.
    members = [f"k{i}={'v' * 60}" for i in range(10)]  # 63 characters each
    sent = [*members[:2], "big=" + "b" * 200, *members[2:]]
    answer = post_payment(
        gateway, traceparent=traceparent(new_trace_id()), tracestate=",".join(sent)
    )
    # Without `big`, 10 members are 639 characters: the first 8 are 511.
    assert stored(gateway, answer.json()["id"])["tracestate"] == ",".join(members[:8])


def test_an_unsampled_caller_is_not_exported_but_still_propagated(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    # The default sampler follows the caller's decision (parentbased_always_on).
    trace_id = new_trace_id()
    answer = post_payment(gateway, traceparent=traceparent(trace_id, flags="00"))
    event = stored(gateway, answer.json()["id"])
    assert event["traceparent"].startswith(f"00-{trace_id}-")
    assert event["traceparent"].endswith("-00")
    # A sampled request after it has arrived: the unsampled one would have come with it.
    marker = new_trace_id()
    post_payment(gateway, traceparent=traceparent(marker))
    server_span(receiver, marker)
    time.sleep(0.2)
    assert not [s for s in receiver.spans() if s.trace_id == trace_id]


def test_a_duplicate_keeps_the_first_requests_traceparent(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    body = sample_body("finfusion", "payment.succeeded", datetime.now(UTC))
    first_trace, second_trace = new_trace_id(), new_trace_id()
    for trace_id in (first_trace, second_trace):
        headers = finfusion.sign_finfusion(body, SECRET, datetime.now(UTC))
        answer = gateway.post(
            "finfusion-main", body, headers={**headers, "traceparent": traceparent(trace_id)}
        )
        assert answer.status_code == 200
    assert answer.json()["status"] == "duplicate"
    first, second = server_span(receiver, first_trace), server_span(receiver, second_trace)
    assert second.attributes["finrelay.outcome"] == "duplicate"
    assert second.events == ("verified", "normalized")
    assert stored(gateway, answer.json()["id"])["traceparent"] == (
        f"00-{first_trace}-{first.span_id}-01"
    )


def test_every_event_of_a_batch_carries_the_request_spans_context(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    trace_id = new_trace_id()
    events = [{"event_id": secrets.token_hex(8), "kind": "charge.paid"} for _ in range(3)]
    answer = gateway.post(
        "batchly",
        json.dumps({"events": events}).encode(),
        params={"token": TOKEN},
        headers={"traceparent": traceparent(trace_id)},
    )
    assert answer.status_code == 200, answer.text
    span = server_span(receiver, trace_id)
    assert span.events == ("verified", "normalized", "stored")
    assert {stored(gateway, event_id)["traceparent"] for event_id in answer.json()["ids"]} == {
        f"00-{trace_id}-{span.span_id}-01"
    }


def test_a_refused_webhook_is_a_span_with_its_error(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    trace_id = new_trace_id()
    body = sample_body("finfusion", "payment.succeeded", datetime.now(UTC))
    headers = finfusion.sign_finfusion(body, "whsec_wrong", datetime.now(UTC))
    answer = gateway.post(
        "finfusion-main", body, headers={**headers, "traceparent": traceparent(trace_id)}
    )
    assert answer.status_code == 401
    span = server_span(receiver, trace_id)
    assert span.attributes["http.response.status_code"] == 401
    assert span.attributes["finrelay.outcome"] == "invalid_signature"
    assert span.attributes["error.type"] == "invalid_signature"
    # A 4xx is the caller's failure: a server span's status stays unset (semantic conventions).
    assert span.status_code == 0
    assert span.events == ()
    line = webhook_line(gateway, answer.headers["x-request-id"])
    assert (line["trace_id"], line["span_id"]) == (trace_id, span.span_id)


def test_an_invalid_payload_is_a_span_with_its_error(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    trace_id = new_trace_id()
    body = b'{"not": "finfusion"}'
    headers = finfusion.sign_finfusion(body, SECRET, datetime.now(UTC))
    answer = gateway.post(
        "finfusion-main", body, headers={**headers, "traceparent": traceparent(trace_id)}
    )
    assert answer.status_code == 422
    span = server_span(receiver, trace_id)
    assert span.attributes["error.type"] == "invalid_payload"
    assert span.events == ("verified",)


def test_an_unknown_source_is_traced_with_its_name_cut_short(
    gateway: GatewayProcess, receiver: OtlpReceiver
) -> None:
    trace_id = new_trace_id()
    name = "nobody-" + "x" * 200
    answer = gateway.post(name, b"{}", headers={"traceparent": traceparent(trace_id)})
    assert answer.status_code == 404
    span = server_span(receiver, trace_id)
    assert span.attributes["finrelay.source"] == name[:64]
    assert span.attributes["finrelay.outcome"] == "unknown_source"
    assert span.attributes["error.type"] == "unknown_source"
    assert span.attributes["http.response.status_code"] == 404
    # The path a client made up is not an attribute (one value per request would be unbounded).
    assert "url.path" not in span.attributes
    assert "finrelay.adapter" not in span.attributes


def test_another_method_is_a_span_too(gateway: GatewayProcess, receiver: OtlpReceiver) -> None:
    trace_id = new_trace_id()
    answer = httpx.get(
        f"{gateway.base_url}/webhooks/finfusion-main",
        headers={"traceparent": traceparent(trace_id)},
    )
    assert answer.status_code == 405
    spans = receiver.wait_for(lambda spans: any(s.trace_id == trace_id for s in spans))
    (span,) = [s for s in spans if s.trace_id == trace_id]
    assert span.name == "GET /webhooks/{source}"
    assert span.attributes["http.response.status_code"] == 405


# Propagating only, disabled.


def test_without_an_endpoint_the_event_still_carries_the_callers_trace(tmp_path: Path) -> None:
    # Where the SDK would send spans with no endpoint set (localhost:4318): nothing comes.
    default_collector = socket.socket()
    try:
        default_collector.bind(("127.0.0.1", 4318))
        default_collector.listen(8)
        default_collector.setblocking(False)
    except OSError:
        default_collector.close()
    process = GatewayProcess(tmp_path, CONFIG, env=FAST_EXPORT).start()
    try:
        trace_id = new_trace_id()
        answer = post_payment(process, traceparent=traceparent(trace_id), tracestate=CALLER_STATE)
        assert answer.status_code == 200
        event = stored(process, answer.json()["id"])
        prefix = f"00-{trace_id}-"
        assert event["traceparent"].startswith(prefix)
        span_id = event["traceparent"][len(prefix) : len(prefix) + 16]
        assert span_id not in (CALLER_SPAN, "0" * 16)
        assert event["tracestate"] == CALLER_STATE
        line = webhook_line(process, answer.headers["x-request-id"])
        assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)
        # A new trace when the caller has none.
        fresh = stored(process, post_payment(process).json()["id"])
        assert fresh["traceparent"].endswith("-03")
        assert not fresh["traceparent"].startswith(prefix)
    finally:
        process.stop()
    with default_collector:
        if default_collector.fileno() != -1:
            with pytest.raises(BlockingIOError):
                default_collector.accept()


def test_otel_sdk_disabled_turns_it_all_off(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        env = {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        process = GatewayProcess(tmp_path, CONFIG, env={**env, **FAST_EXPORT}).start()
        try:
            answer = post_payment(process, traceparent=traceparent(new_trace_id()))
            assert answer.status_code == 200
            event = stored(process, answer.json()["id"])
            assert "traceparent" not in event
            assert "tracestate" not in event
            line = webhook_line(process, answer.headers["x-request-id"])
            assert "trace_id" not in line
            assert "span_id" not in line
        finally:
            process.stop()
        assert receiver.requests == 0


# Start-up and the collector.


def serve_until_exit(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    """`gateway serve` that is expected to refuse to start: its exit code and output."""
    config = tmp_path / "gateway.toml"
    config.write_text(BASE_CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**GatewayProcess(tmp_path).env, **env, "PYTHONPATH": str(REPO)},
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"},
            ["OTEL_EXPORTER_OTLP_PROTOCOL='grpc' is not supported", "http/protobuf"],
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='grpc' is not supported"],
        ),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, ["OTEL_TRACES_EXPORTER='zipkin'", "OTLP only"]),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, ["OTEL_TRACES_SAMPLER='sometimes'"]),
    ],
    ids=["grpc", "traces-grpc", "zipkin", "sampler"],
)
def test_serve_refuses_otel_variables_it_cannot_follow(
    tmp_path: Path, env: dict[str, str], words: list[str]
) -> None:
    code, output = serve_until_exit(tmp_path, env)
    assert code == 1, output
    (line,) = [line for line in output.splitlines() if '"cannot_start"' in line]
    for word in words:
        assert word in json.loads(line)["detail"]
    assert '"listening"' not in output


def test_serve_ignores_the_variables_when_the_sdk_is_disabled(tmp_path: Path) -> None:
    env = {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    process = GatewayProcess(tmp_path, CONFIG, env=env).start()
    try:
        assert post_payment(process).status_code == 200
    finally:
        assert process.stop() == 0


def test_service_name_is_honoured_by_every_worker(tmp_path: Path, receiver: OtlpReceiver) -> None:
    # The default layout: a supervisor and its workers, each exporting its own spans.
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "payments-edge",
        **FAST_EXPORT,
    }
    process = GatewayProcess(tmp_path, CONFIG, env=env, serve_args=["--workers", "2"]).start()
    try:
        trace_ids = [new_trace_id() for _ in range(6)]
        for trace_id in trace_ids:
            assert post_payment(process, traceparent=traceparent(trace_id)).status_code == 200
        for trace_id in trace_ids:
            span = server_span(receiver, trace_id)
            assert span.service_name == "payments-edge"
            assert span.resource["service.version"]
    finally:
        assert process.stop() == 0


class _Unanswering:
    """A collector that takes connections (the kernel completes them) and never answers."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.socket.getsockname()[1]}"


@pytest.mark.parametrize("collector", ["closed-port", "never-answers"])
def test_a_collector_that_is_down_slows_nothing_and_holds_no_stop(
    tmp_path: Path, collector: str
) -> None:
    unanswering = _Unanswering() if collector == "never-answers" else None
    endpoint = unanswering.endpoint if unanswering else f"http://127.0.0.1:{free_port()}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **FAST_EXPORT}
    process = GatewayProcess(tmp_path, CONFIG, env=env).start()
    try:
        latencies = []
        for _ in range(30):
            started = time.perf_counter()
            assert post_payment(process, traceparent=traceparent(new_trace_id())).status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
        # The exporter waits in its own thread (up to its 10 s timeout, for a collector that
        # never answers); a request never waits for it. Loose bounds: a shared test machine
        # answers in tens of milliseconds even without tracing.
        assert sorted(latencies)[len(latencies) // 2] < 0.5, latencies
        assert max(latencies) < 3.0, latencies
        assert process.process is not None
        stopping = time.monotonic()
        assert process.stop() == 0
        assert time.monotonic() - stopping < 6.0
    finally:
        process.stop()
        if unanswering is not None:
            unanswering.socket.close()

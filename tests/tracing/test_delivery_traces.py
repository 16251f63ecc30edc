"""docs/reference/traces.md, the delivery side: each attempt is a span in the event's trace, and its
context goes out with the message. A real `gateway serve` exports to a real OTLP/HTTP receiver,
a real HTTP subscriber reads the `traceparent` it is sent; replay and redrive (the CLI, a
process of its own) start new traces; a restart between ingest and delivery keeps the trace."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from adapters.samples import sample_body
from tests.delivery.subscriber import Received, Reply, Subscriber, first_attempts, new_hmac_secret
from tests.queues.support import queue_config, wait_until
from tests.service.harness import GatewayProcess, free_port
from tests.support import TOKEN
from tests.tracing.otlp_receiver import OtlpReceiver, ReceivedSpan

SOON = 30.0
# The exporter's batch goes out this often (ms) rather than every 5 s.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
OTEL_VARIABLES = tuple(name for name in os.environ if name.startswith("OTEL_"))

StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[StartGateway]:
    started: list[GatewayProcess] = []

    def start(config: str, env: Mapping[str, str]) -> GatewayProcess:
        workdir = tmp_path / f"gateway{len(started)}"
        workdir.mkdir()
        gateway = GatewayProcess(workdir, config, env=env)
        # Whatever OTEL_* the test run has, only the test's own count.
        for name in OTEL_VARIABLES:
            gateway.env.pop(name, None)
        gateway.env.update(env)
        started.append(gateway.start())
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
        print(f"--- gateway log ({gateway.workdir}) ---\n" + gateway.logs()[-6000:])


def exporting_to(receiver: OtlpReceiver) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **FAST_EXPORT}


def new_traceparent() -> tuple[str, str]:
    """A caller's `traceparent`, and its trace id."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


def post_traced(gateway: GatewayProcess, traceparent: str | None) -> str:
    """One FinchPay webhook carrying `traceparent`; the accepted event's id."""
    headers = {} if traceparent is None else {"traceparent": traceparent}
    body = sample_body("finchpay", "COMPLETE", datetime.now(UTC))
    response = gateway.post("finchpay", body, params={"token": TOKEN}, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def http_config(subscriber: Subscriber, secret: str, **settings: object) -> str:
    return queue_config("ledger", "http", url=subscriber.url, secret=secret, **settings)


def attempts_of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """The attempt spans, in attempt order."""
    found = [span for span in spans if "finrelay.attempt" in span.attributes]
    return sorted(found, key=lambda span: span.attributes["finrelay.attempt"])


def webhook_span(spans: list[ReceivedSpan], trace_id: str) -> ReceivedSpan:
    (span,) = [s for s in spans if s.kind == "server" and s.trace_id == trace_id]
    return span


def ids_of(received: Received) -> tuple[str, str]:
    """The (trace id, span id) of the `traceparent` a subscriber got."""
    traceparent = received.headers["traceparent"]
    return traceparent[3:35], traceparent[36:52]


def log_records(gateway: GatewayProcess, event: str) -> list[dict[str, object]]:
    """The gateway's log lines of `event`, once there is one (lines are written every 200 ms)."""
    logs = gateway.logs_once_they_say(f'"event":"{event}"')
    lines = (json.loads(line) for line in logs.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


def test_an_http_attempt_is_a_child_of_the_webhook_span_and_sends_its_own_context(
    receiver: OtlpReceiver, start_gateway: StartGateway
) -> None:
    secret = new_hmac_secret()
    with Subscriber([secret]) as subscriber:
        gateway = start_gateway(http_config(subscriber, secret), exporting_to(receiver))
        traceparent, trace_id = new_traceparent()
        event_id = post_traced(gateway, traceparent)
        subscriber.wait_for_count(1, SOON)
        spans = receiver.wait_for(lambda spans: len(attempts_of(spans)) == 1, SOON)

    (received,) = subscriber.received
    (attempt,) = attempts_of(spans)
    webhook = webhook_span(spans, trace_id)
    assert ids_of(received) == (trace_id, attempt.span_id)
    assert attempt.trace_id == trace_id
    assert attempt.parent_span_id == webhook.span_id
    assert (attempt.name, attempt.kind) == ("POST", "client")
    assert attempt.attributes["finrelay.subscriber"] == "ledger"
    assert attempt.attributes["finrelay.subscriber_kind"] == "http"
    assert attempt.attributes["finrelay.attempt"] == 1
    assert attempt.attributes["finrelay.outcome"] == "delivered"
    assert attempt.attributes["http.request.method"] == "POST"
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["url.full"] == subscriber.url
    assert "http.request.resend_count" not in attempt.attributes
    assert "error.type" not in attempt.attributes
    # The event body keeps the webhook's context; what the subscriber got is the attempt's.
    event = json.loads(received.body)
    assert event["id"] == event_id
    assert event["traceparent"][3:35] == trace_id
    # The attempt's log line carries the attempt span's ids.
    (delivered,) = log_records(gateway, "delivered")
    assert (delivered["trace_id"], delivered["span_id"]) == (trace_id, attempt.span_id)


def test_a_retried_delivery_is_two_attempt_spans_of_one_trace(
    receiver: OtlpReceiver, start_gateway: StartGateway
) -> None:
    secret = new_hmac_secret()
    with Subscriber([secret], script=first_attempts(1, Reply(500))) as subscriber:
        gateway = start_gateway(
            http_config(subscriber, secret, retry_schedule=[0.2]), exporting_to(receiver)
        )
        traceparent, trace_id = new_traceparent()
        post_traced(gateway, traceparent)
        subscriber.wait_for_count(2, SOON)
        spans = receiver.wait_for(lambda spans: len(attempts_of(spans)) == 2, SOON)

    first, second = attempts_of(spans)
    webhook = webhook_span(spans, trace_id)
    assert [span.attributes["finrelay.attempt"] for span in (first, second)] == [1, 2]
    assert [span.attributes["finrelay.outcome"] for span in (first, second)] == [
        "retry",
        "delivered",
    ]
    assert {first.parent_span_id, second.parent_span_id} == {webhook.span_id}
    assert {first.trace_id, second.trace_id} == {trace_id}
    assert first.attributes["error.type"] == "500"
    assert first.attributes["http.response.status_code"] == 500
    assert first.status_code == 2  # OTLP's STATUS_CODE_ERROR
    assert second.attributes["http.request.resend_count"] == 1
    # Each request carried its own attempt's span id.
    assert [ids_of(received) for received in subscriber.received] == [
        (trace_id, first.span_id),
        (trace_id, second.span_id),
    ]
    (retry,) = log_records(gateway, "retry_scheduled")
    assert (retry["trace_id"], retry["span_id"]) == (trace_id, first.span_id)


def test_a_replay_starts_a_new_trace_linked_to_the_events(
    receiver: OtlpReceiver, start_gateway: StartGateway
) -> None:
    secret = new_hmac_secret()
    with Subscriber([secret]) as subscriber:
        gateway = start_gateway(http_config(subscriber, secret), exporting_to(receiver))
        traceparent, trace_id = new_traceparent()
        event_id = post_traced(gateway, traceparent)
        subscriber.wait_for_count(1, SOON)
        replayed = gateway.gateway_cli("replay", event_id)
        assert replayed.returncode == 0, replayed.stderr
        subscriber.wait_for_count(2, SOON)
        spans = receiver.wait_for(
            lambda spans: len(attempts_of(spans)) == 2 and any(s.name == "replay" for s in spans),
            SOON,
        )

    webhook = webhook_span(spans, trace_id)
    (root,) = [span for span in spans if span.name == "replay"]
    first, again = sorted(attempts_of(spans), key=lambda span: span.trace_id != trace_id)
    assert first.trace_id == trace_id
    # The replay's root span (exported by the CLI's own process) and its attempt: a new trace.
    assert root.trace_id != trace_id
    assert root.parent_span_id == ""
    assert again.trace_id == root.trace_id
    assert again.parent_span_id == root.span_id
    assert [(link.trace_id, link.span_id) for link in again.links] == [(trace_id, webhook.span_id)]
    assert [(link.trace_id, link.span_id) for link in root.links] == [(trace_id, webhook.span_id)]
    assert again.attributes["finrelay.attempt"] == 1  # a replay starts a fresh count
    assert ids_of(subscriber.received[1]) == (root.trace_id, again.span_id)
    # The event body keeps the trace it was stored with.
    assert json.loads(subscriber.received[1].body)["traceparent"][3:35] == trace_id


def test_a_replay_from_the_admin_api_starts_a_new_trace_too(
    receiver: OtlpReceiver, start_gateway: StartGateway
) -> None:
    secret = new_hmac_secret()
    token = secrets.token_hex(16)
    with Subscriber([secret]) as subscriber:
        config = http_config(subscriber, secret) + f'\n[admin]\ntoken = "{token}"\n'
        gateway = start_gateway(config, exporting_to(receiver))
        traceparent, trace_id = new_traceparent()
        event_id = post_traced(gateway, traceparent)
        subscriber.wait_for_count(1, SOON)
        answer = httpx.post(
            f"{gateway.base_url}/admin/api/events/{event_id}/replay",
            headers={"authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 202, answer.text
        subscriber.wait_for_count(2, SOON)
        spans = receiver.wait_for(
            lambda spans: len(attempts_of(spans)) == 2 and any(s.name == "replay" for s in spans),
            SOON,
        )

    webhook = webhook_span(spans, trace_id)
    (root,) = [span for span in spans if span.name == "replay"]
    again = next(span for span in attempts_of(spans) if span.trace_id != trace_id)
    assert root.trace_id != trace_id
    assert again.trace_id == root.trace_id
    assert again.parent_span_id == root.span_id
    assert [(link.trace_id, link.span_id) for link in root.links] == [(trace_id, webhook.span_id)]
    assert ids_of(subscriber.received[1]) == (root.trace_id, again.span_id)


def test_a_redrive_starts_a_new_trace_each_attempt_linked_to_its_event(
    receiver: OtlpReceiver, start_gateway: StartGateway
) -> None:
    secret = new_hmac_secret()
    # 400: the delivery fails at once, a dead letter.
    with Subscriber([secret], script=first_attempts(1, Reply(400))) as subscriber:
        gateway = start_gateway(http_config(subscriber, secret), exporting_to(receiver))
        traced = [new_traceparent() for _ in range(2)]
        for traceparent, _ in traced:
            post_traced(gateway, traceparent)
        wait_until(lambda: len(gateway.dead_letters()) == 2, SOON, "two dead letters")
        redriven = gateway.gateway_cli("redrive")
        assert redriven.returncode == 0, redriven.stderr
        subscriber.wait_for_count(4, SOON)
        spans = receiver.wait_for(
            lambda spans: len(attempts_of(spans)) == 4 and any(s.name == "redrive" for s in spans),
            SOON,
        )

    (root,) = [span for span in spans if span.name == "redrive"]
    again = [span for span in attempts_of(spans) if span.trace_id == root.trace_id]
    assert len(again) == 2
    assert {span.parent_span_id for span in again} == {root.span_id}
    assert {span.attributes["finrelay.outcome"] for span in again} == {"delivered"}
    webhooks = {trace_id: webhook_span(spans, trace_id).span_id for _, trace_id in traced}
    assert sorted((link.trace_id, link.span_id) for span in again for link in span.links) == (
        sorted(webhooks.items())
    )
    assert {ids_of(received)[0] for received in subscriber.received[2:]} == {root.trace_id}


def test_a_delivery_sent_after_a_restart_stays_in_the_webhooks_trace(
    receiver: OtlpReceiver, start_gateway: StartGateway
) -> None:
    secret = new_hmac_secret()
    port = free_port()
    # The subscriber is down while the first gateway runs: it only gets to retry.
    down = Subscriber([secret], port=port)
    config = queue_config(
        "ledger",
        "http",
        url=f"http://127.0.0.1:{port}/hook",
        secret=secret,
        retry_schedule=[0.5] * 20,
    )
    gateway = start_gateway(config, exporting_to(receiver))
    traceparent, trace_id = new_traceparent()
    post_traced(gateway, traceparent)
    receiver.wait_for(lambda spans: len(attempts_of(spans)) >= 1, SOON)
    gateway.stop()
    with down as subscriber:
        gateway.start()
        subscriber.wait_for_count(1, SOON)
        spans = receiver.wait_for(
            lambda spans: any(
                span.attributes.get("finrelay.outcome") == "delivered"
                for span in attempts_of(spans)
            ),
            SOON,
        )
    (delivered,) = [
        s for s in attempts_of(spans) if s.attributes["finrelay.outcome"] == "delivered"
    ]
    assert delivered.trace_id == trace_id
    assert delivered.parent_span_id == webhook_span(spans, trace_id).span_id
    assert ids_of(subscriber.received[0]) == (trace_id, delivered.span_id)


def test_without_an_endpoint_the_subscriber_still_gets_the_events_trace(
    start_gateway: StartGateway,
) -> None:
    secret = new_hmac_secret()
    with Subscriber([secret]) as subscriber:
        gateway = start_gateway(http_config(subscriber, secret), {})
        traceparent, trace_id = new_traceparent()
        post_traced(gateway, traceparent)
        subscriber.wait_for_count(1, SOON)

    (received,) = subscriber.received
    stored = json.loads(received.body)["traceparent"]
    sent_trace, sent_span = ids_of(received)
    assert sent_trace == trace_id
    # A span id of its own: neither the caller's nor the webhook span's.
    assert sent_span not in (traceparent[36:52], stored[36:52])
    (delivered,) = log_records(gateway, "delivered")
    assert (delivered["trace_id"], delivered["span_id"]) == (trace_id, sent_span)


def test_with_the_sdk_disabled_no_traceparent_is_sent(start_gateway: StartGateway) -> None:
    secret = new_hmac_secret()
    with Subscriber([secret]) as subscriber:
        gateway = start_gateway(http_config(subscriber, secret), {"OTEL_SDK_DISABLED": "true"})
        traceparent, _ = new_traceparent()
        post_traced(gateway, traceparent)
        subscriber.wait_for_count(1, SOON)

    (received,) = subscriber.received
    assert "traceparent" not in received.headers
    assert "tracestate" not in received.headers
    assert "traceparent" not in json.loads(received.body)
    (delivered,) = log_records(gateway, "delivered")
    assert "trace_id" not in delivered


def test_a_subscriber_url_is_exported_without_its_query_values(
    receiver: OtlpReceiver, start_gateway: StartGateway
) -> None:
    secret = new_hmac_secret()
    with Subscriber([secret]) as subscriber:
        # (Credentials in the URL's userinfo: tests/tracing/test_attempt_spans.py; the HTTP
        # client refuses them in a real send.)
        url = subscriber.url + "?token=s3cret&team=ops"
        gateway = start_gateway(
            queue_config("ledger", "http", url=url, secret=secret), exporting_to(receiver)
        )
        post_traced(gateway, None)
        subscriber.wait_for_count(1, SOON)
        spans = receiver.wait_for(lambda spans: len(attempts_of(spans)) == 1, SOON)
    (attempt,) = attempts_of(spans)
    shown = attempt.attributes["url.full"]
    assert shown == f"http://127.0.0.1:{subscriber.port}/hook?token=REDACTED&team=REDACTED"
    assert "s3cret" not in repr(spans)

"""An attempt's span (docs/reference/traces.md): where it belongs in a trace, and what it says.

Its parent is the trace the delivery continues: a replayed or redriven delivery's own (the new
trace its operator's command started, stored with it), else the event's (the `traceparent` the
event body was stored with, so an attempt made hours later, by another process or node, joins
the webhook's trace). A replayed delivery's attempts link to the event's trace.

The transport names the span and adds its conventions' attributes (`http.*`, `messaging.*`);
this adds ours (`finrelay.subscriber`, `finrelay.attempt`, `finrelay.outcome`) and
`error.type`. Only a recorded span is described at all: with no endpoint, an attempt costs a
span id and a context variable, nothing more.
"""

from __future__ import annotations

import re

from gateway.delivery.decide import Decision, attempt_outcome
from gateway.delivery.transport import SendResult, SpanKindName, Transport
from gateway.store.base import ClaimedDelivery
from gateway.tracing import Span, SpanKind, TraceContext, Tracing, event_trace

__all__ = ["end_attempt_span", "error_type", "start_attempt_span"]

_KINDS: dict[SpanKindName, SpanKind] = {
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "internal": SpanKind.INTERNAL,
}
# What an error word keeps of a transport's error sentence (below).
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\([^)]*\)|\S*/\S*")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_MAX_ERROR_TYPE = 64


def start_attempt_span(
    tracing: Tracing,
    transport: Transport,
    subscriber: str,
    subscriber_kind: str,
    delivery: ClaimedDelivery,
) -> Span:
    """The span of the attempt about to be made on `delivery` (not entered yet)."""
    kind = _KINDS[transport.span_kind]
    if not tracing.enabled:
        return tracing.span("", kind, parent=None)
    event = event_trace(delivery.body)
    links: tuple[TraceContext, ...] = ()
    if delivery.traceparent is None:
        parent = event
    else:
        parent = TraceContext(delivery.traceparent, delivery.tracestate)
        links = () if event is None else (event,)
    if not tracing.exporting:
        # Nothing records: no name, attributes or links to work out.
        return tracing.span("", kind, parent=parent)
    attempt = delivery.attempts + 1
    described = transport.attempt_span(delivery.event_type, delivery.source, attempt)
    return tracing.span(
        described.name,
        kind,
        parent=parent,
        attributes={
            "finrelay.subscriber": subscriber,
            "finrelay.subscriber_kind": subscriber_kind,
            "finrelay.attempt": attempt,
            **described.attributes,
        },
        links=links,
    )


def end_attempt_span(span: Span, result: SendResult, decision: Decision) -> None:
    """What became of the attempt, on its span: outcome, status, and `error.type` (and the
    error status) unless it was delivered."""
    if not span.recording:
        return
    outcome = attempt_outcome(decision)
    if result.status_code is None:
        span.set({"finrelay.outcome": outcome})
    else:
        span.set({"finrelay.outcome": outcome, "http.response.status_code": result.status_code})
    if result.outcome != "delivered":
        span.fail(error_type(result))


def error_type(result: SendResult) -> str:
    """`error.type` of a failed attempt: a short, low-cardinality word, never a secret.

    The status code for an HTTP answer (OpenTelemetry's HTTP conventions); `timeout`; else the
    transport's error sentence up to its first colon, without anything quoted, bracketed or
    path-like (a subject, an exchange, a file), as snake case: `connection error:
    ClientConnectorError` -> `connection_error`, `the exchange 'x' does not exist` ->
    `the_exchange_does_not_exist`. What follows a colon (an exception's or a broker's own
    words) is never kept."""
    if result.status_code is not None:
        return str(result.status_code)
    error = result.error or ""
    if "timeout" in error.lower():
        return "timeout"
    head = _QUOTED.sub(" ", error.partition(":")[0])
    word = _NOT_WORD.sub("_", head.lower()).strip("_")[:_MAX_ERROR_TYPE].rstrip("_")
    return word or "_OTHER"

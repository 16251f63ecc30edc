"""Spans recorded straight into the SDK's `ReadableSpan`, for its processor and exporter.

The OpenTelemetry SDK's own span object costs about 30 us from start to end here (a lock per
call, bounded attribute and event containers, a copy into a `ReadableSpan` at the end, the
SDK's self-metrics hooks): with two spans an event, exporting every span took the gateway's
ingest rate to 71% of tracing off (docs/benchmarks.md#traces). A gateway span is short and only
ever touched by the task that opened it, so none of that protection buys anything: here a
span is a few fields until it ends, and becomes one `ReadableSpan` then, about 8 us in all.
Its attributes go into that span as the plain dict they are when the SDK's cleaning would not
change them (single str, bool, int or float values, within the length limit, none dropped), and
its events and links as tuples within their limits: the SDK's bounded containers, a lock and a
check per item, were a third of a span's cost. Anything else takes the SDK's containers.

What stays the SDK's: the sampler (`OTEL_TRACES_SAMPLER` / `_ARG`, read by `TracerProvider`),
the span limits (`OTEL_SPAN_*` / `OTEL_ATTRIBUTE_*`, applied to each span's attributes and
events as the SDK does), the resource, the batch processor (bounded queue, its own thread) and
the OTLP exporter. A span ends in the processor as the SDK's would (`on_end`), so any
processor works: the in-memory exporter of the tests sees exactly what the collector gets.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway import __version__

__all__ = ["RecordedSpan", "SpanRecorder"]

_Item = TypeVar("_Item", Event, Link)
_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)


class SpanRecorder:
    """Starts spans as the SDK's tracer would (ids, sampling, flags, state) and hands each
    ended one to `processor`."""

    def __init__(
        self,
        *,
        sampler: Sampler,
        resource: Resource,
        processor: SpanProcessor,
        scope: InstrumentationScope,
        limits: SpanLimits | None = None,
    ) -> None:
        self.processor = processor
        self._sampler = sampler
        self._resource = resource
        self._scope = scope
        self._limits = limits or SpanLimits()  # from the OTEL_* variables, as the SDK's
        self.attribute_limit = self._limits.max_span_attributes
        self._random = random.Random()  # noqa: S311 - ids need uniqueness, as the SDK's generator

    @classmethod
    def of(cls, provider: TracerProvider, processor: SpanProcessor) -> SpanRecorder:
        """A recorder with `provider`'s sampler and resource (both read from the environment
        when the provider was made), ending spans in `processor`, in finrelay's scope."""
        return cls(
            sampler=provider.sampler,
            resource=provider.resource,
            processor=processor,
            scope=InstrumentationScope("finrelay", __version__),
        )

    def start(
        self,
        name: str,
        kind: SpanKind,
        parent: trace.SpanContext | None,
        attributes: Mapping[str, AttributeValue] | None,
        links: Sequence[Link],
    ) -> RecordedSpan | trace.SpanContext:
        """A recording span, or, when the sampler drops it, the context of one that is not
        recorded (its ids still travel, its flags say not sampled)."""
        if parent is None:
            trace_id = self._random.getrandbits(128) or 1
            context = None
            random_id = True
        else:
            trace_id = parent.trace_id
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
            random_id = parent.trace_flags.random_trace_id
        sampling = self._sampler.should_sample(
            context, trace_id, name, kind, attributes, links or None
        )
        sampled = sampling.decision is Decision.RECORD_AND_SAMPLE
        flags = trace.TraceFlags(
            (trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
            | (trace.TraceFlags.RANDOM_TRACE_ID if random_id else 0)
        )
        span_context = trace.SpanContext(
            trace_id,
            self._random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=flags,
            trace_state=sampling.trace_state,
        )
        # RECORD_ONLY (recorded, not sampled) is never exported: the batch processor drops it.
        # No built-in sampler answers it, and a span nobody sees is not worth recording.
        if not sampled:
            return span_context
        return RecordedSpan(
            self, name, kind, span_context, parent, sampling.attributes or {}, links
        )

    def end(self, span: RecordedSpan, end_time: int) -> None:
        limits = self._limits
        attributes: Mapping[str, AttributeValue] = span.attributes
        if span.dropped_attributes or not _plain(attributes, limits.max_span_attribute_length):
            # The SDK's own cleaning (sequences, other types, long strings, drops counted).
            bounded = BoundedAttributes(
                limits.max_span_attributes,
                attributes,
                immutable=True,
                max_value_len=limits.max_span_attribute_length,
            )
            bounded.dropped += span.dropped_attributes
            attributes = bounded
        # A plain dict, tuples: what the SDK's bounded containers would hold when nothing is
        # cleaned or dropped, without a lock and a check per item (a third of a span's cost).
        events = _bounded(span.events, limits.max_events)
        links = _bounded(span.links, limits.max_links)
        self.processor.on_end(
            ReadableSpan(
                span.name,
                span.context,
                span.parent,
                self._resource,
                attributes,
                events,
                links,
                span.kind,
                None,
                span.status,
                span.start_time,
                end_time,
                self._scope,
            )
        )


_PLAIN_TYPES = frozenset({str, bool, int, float})


def _plain(attributes: Mapping[str, AttributeValue], max_length: int | None) -> bool:
    """Whether the SDK's cleaning would leave `attributes` as they are (their keys are checked
    as they are set): single str, bool, int or float values, no string longer than
    `max_length`."""
    for value in attributes.values():
        kind = type(value)
        if kind not in _PLAIN_TYPES:
            return False
        if kind is str and max_length is not None and len(value) > max_length:  # type: ignore[arg-type]
            return False
    return True


def _bounded(items: Sequence[_Item], limit: int | None) -> Sequence[_Item]:
    """`items` as the SDK keeps them: a tuple within `limit`, else its `BoundedList` (the last
    `limit` kept, the rest counted as dropped)."""
    if limit is None or len(items) <= limit:
        return tuple(items)
    return BoundedList.from_seq(limit, items)


class RecordedSpan:
    """A span being recorded: touched by the one task that opened it, so no lock."""

    __slots__ = (
        "attributes",
        "context",
        "dropped_attributes",
        "events",
        "kind",
        "links",
        "name",
        "parent",
        "recorder",
        "start_time",
        "status",
    )

    def __init__(
        self,
        recorder: SpanRecorder,
        name: str,
        kind: SpanKind,
        context: trace.SpanContext,
        parent: trace.SpanContext | None,
        attributes: Mapping[str, AttributeValue],
        links: Sequence[Link],
    ) -> None:
        self.recorder = recorder
        self.name = name
        self.kind = kind
        self.context = context
        self.parent = parent
        self.attributes: dict[str, AttributeValue] = {}
        self.dropped_attributes = 0
        self.set(attributes)
        self.links = tuple(links)
        self.events: list[Event] = []
        self.status = _UNSET
        self.start_time = time.time_ns()

    def set(self, attributes: Mapping[str, AttributeValue]) -> None:
        # As the SDK's bounded attributes: a key set again moves to the end, and past the count
        # limit the oldest goes, counted, so that the same ones are kept and dropped.
        mine = self.attributes
        limit = self.recorder.attribute_limit
        if (
            (limit is None or len(mine) + len(attributes) <= limit)
            and mine.keys().isdisjoint(attributes)
            and all(attributes)
        ):
            mine.update(attributes)  # the usual case: new keys, room for them
            return
        for key, value in attributes.items():
            if not key:  # as the SDK: refused and counted, taking no one's place
                self.dropped_attributes += 1
                continue
            if key in mine:
                del mine[key]
            elif limit is not None and len(mine) >= limit:
                del mine[next(iter(mine))]
                self.dropped_attributes += 1
            mine[key] = value

    def add_event(self, name: str) -> None:
        self.events.append(_NamedEvent(name, time.time_ns()))

    def fail(self, error_type: str) -> None:
        self.set({"error.type": error_type})
        self.status = _ERROR

    def end(self) -> None:
        self.recorder.end(self, time.time_ns())


class _NamedEvent(Event):
    """The SDK's `Event` with a name and a time and no attributes, made in one step (its own
    constructor goes through two)."""

    def __init__(self, name: str, timestamp: int) -> None:
        self._name = name
        self._timestamp = timestamp
        self._attributes = None

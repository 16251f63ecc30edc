"""Spans written straight into OTLP's protobuf wire format, and the exporter that sends them.

The SDK's OTLP encoder builds a tree of protobuf message objects through small Python helpers
and then serializes it: about 50 us a span, as much as recording the span. Here a batch of
`ReadableSpan`s becomes the bytes of an `ExportTraceServiceRequest` directly: field tags are
constants, the resource and the instrumentation scope (the same for every span a process makes)
and attribute keys are encoded once, and the rest is varints and length-prefixed strings.
What comes out decodes to what the SDK's `encode_spans` builds (tests/tracing/
test_otlp_encoding.py checks it field by field on generated spans), with one addition: a link's
`trace_state`, which OTLP has and the SDK's encoder leaves out.

Wire format (https://protobuf.dev/programming-guides/encoding/): a field is its tag, the varint
`number << 3 | wire type`, then a varint (0), 8 bytes little-endian (1), a varint length and
that many bytes (2), or 4 bytes little-endian (5). proto3 writes no scalar at its default value
(0, "", empty bytes) except inside a oneof (AnyValue), and writes a message field that is set
even when it is empty (the SDK always sets a span's `status`, a batch's resource and scope).

`OTLPWireSpanExporter` is the SDK's OTLP/HTTP exporter (endpoint, headers, TLS, compression,
timeout and retries from the `OTEL_EXPORTER_OTLP_*` variables, as before) with this encoder.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import Attributes

__all__ = ["OTLPWireSpanExporter", "encode_export_request"]

_logger = logging.getLogger(__name__)

_SMALL_VARINTS = [bytes([number]) for number in range(0x80)]
_UINT64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_DOUBLE = struct.Struct("<Bd")  # AnyValue.double_value: tag 0x21, then the double
_TIMES = struct.Struct("<BQBQ")  # Span start (tag 0x39) and end (0x41), fixed64 each
_TIME = struct.Struct("<BQ")  # a fixed64 time after a one-byte tag
_FIXED32 = struct.Struct("<I")
# Span.kind is the API's SpanKind plus one (OTLP's 0 is SPAN_KIND_UNSPECIFIED).
_KINDS = {kind: b"\x30" + bytes([kind.value + 1]) for kind in SpanKind}
# SpanFlags: bit 8 says whether the parent is remote is known, bit 9 that it is (as the SDK).
_LOCAL, _REMOTE = _FIXED32.pack(0x100), _FIXED32.pack(0x300)
_SPAN_FLAGS, _LINK_FLAGS = b"\x85\x01", b"\x35"  # Span.flags is field 16, Link.flags field 6
# Status without a message: code 0 (unset) is proto3's default, so not written.
_STATUSES = {
    code: b"\x7a\x02\x18" + bytes([code.value]) if code.value else b"\x7a\x00"
    for code in StatusCode
}
# Strings encoded once (see `_attributes`), each cache emptied when it reaches _CACHE_MAX.
_KEYS: dict[str, bytes] = {}  # attribute key -> KeyValue.key field
_PAIRS: dict[tuple[str, object], bytes] = {}  # (key, str or int value) -> KeyValue, sized
_SPAN_NAMES: dict[str, bytes] = {}
_EVENT_NAMES: dict[str, bytes] = {}
_PLAIN_EVENTS: dict[str, tuple[bytes, bytes]] = {}  # event name -> (tag and length, name)
_CACHE_MAX = 1024
# Resource and scope, encoded once: by object, kept with it so that its id is not reused.
_RESOURCES: dict[int, tuple[Resource, tuple[bytes, bytes]]] = {}
_SCOPES: dict[int, tuple[InstrumentationScope | None, tuple[bytes, bytes]]] = {}
_PARTS_MAX = 64


def _varint(number: int) -> bytes:
    if number < 0x80:
        return _SMALL_VARINTS[number]
    out = bytearray()
    while number >= 0x80:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes, or an embedded message."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: object) -> bytes:
    """AnyValue's fields, in the SDK's order of checks (bool before int: it is one)."""
    kind = type(value)
    if kind is str:
        return _field(b"\x0a", value.encode())  # type: ignore[attr-defined]
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"{value} does not fit OTLP's int64")
        return b"\x18" + _varint(value & _UINT64)
    if isinstance(value, float):
        return _DOUBLE.pack(0x21, value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(item)) for item in value]))
    if isinstance(value, Mapping):
        pairs = [b"\x0a" + _key_value(str(key), item) for key, item in value.items()]
        return _field(b"\x32", b"".join(pairs))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: object) -> bytes:
    """A KeyValue message, without its tag but with its length (tags differ by container)."""
    encoded_key = _KEYS.get(key)
    if encoded_key is None:
        encoded_key = _field(b"\x0a", key.encode())
        if len(_KEYS) >= _CACHE_MAX:
            _KEYS.clear()
        _KEYS[key] = encoded_key
    pair = encoded_key + _field(b"\x12", _any_value(value))
    return _varint(len(pair)) + pair


def _attributes(tag: bytes, attributes: Attributes) -> list[bytes]:
    if not attributes:
        return []
    fields: list[bytes] = []
    # The SDK's BoundedAttributes iterates in Python, key by key under a lock; its copy() (as
    # its read-only view's) is the dict it wraps, copied in C.
    if isinstance(attributes, (MappingProxyType, BoundedAttributes, dict)):
        attributes = attributes.copy()
    for key, value in attributes.items():
        # Most values repeat (a method, a source, an outcome, a status): the pair is encoded
        # once; only a str or an int (not a bool or a float, equal to some ints) is looked up.
        kind = type(value)
        if kind is str or kind is int:
            pair = _PAIRS.get((key, value))
            if pair is not None:
                fields += (tag, pair)
                continue
        try:
            pair = _key_value(key, value)
        except Exception:  # an attribute the SDK's encoder also drops, logging it
            _logger.exception("Failed to encode key %s", key)
            continue
        if kind is str or kind is int:
            if len(_PAIRS) >= _CACHE_MAX:
                _PAIRS.clear()  # values that never repeat (an event id) fill it up
            _PAIRS[key, value] = pair
        fields += (tag, pair)
    return fields


def _string(cache: dict[str, bytes], tag: bytes, text: str) -> bytes:
    """A string field whose values repeat (a span's or an event's name), encoded once."""
    encoded = cache.get(text)
    if encoded is None:
        encoded = _field(tag, text.encode())
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[text] = encoded
    return encoded


def _plain_event(name: str) -> tuple[bytes, bytes]:
    """An event with a time, `name` and no attributes: its tag and length (the time is 9 bytes),
    and its name field."""
    found = _PLAIN_EVENTS.get(name)
    if found is None:
        field = _field(b"\x12", name.encode())
        found = b"\x5a" + _varint(9 + len(field)), field
        if len(_PLAIN_EVENTS) >= _CACHE_MAX:
            _PLAIN_EVENTS.clear()
        _PLAIN_EVENTS[name] = found
    return found


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None  # an ended span has one
    parent = span.parent
    start, end = span.start_time or 0, span.end_time or 0
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_field(b"\x1a", context.trace_state.to_header().encode()))
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_string(_SPAN_NAMES, b"\x2a", span.name))
    parts.append(_KINDS[span.kind])
    if start and end:
        parts.append(_TIMES.pack(0x39, start, 0x41, end))
    else:
        parts += (_TIME.pack(0x39, start) if start else b"", _TIME.pack(0x41, end) if end else b"")
    parts += _attributes(b"\x4a", span.attributes)
    if dropped := span.dropped_attributes:
        parts += (b"\x50", _varint(dropped))
    for event in span.events:
        timestamp, attributes = event.timestamp, event.attributes
        if timestamp and event.name and attributes is None:
            # The gateway's events (verified, normalized, stored): a name and a time, so all
            # but the time is the same for every one of that name.
            head, name = _plain_event(event.name)
            parts += (head, _TIME.pack(0x09, timestamp), name)
            continue
        event_parts = [_TIME.pack(0x09, timestamp) if timestamp else b""]
        if event.name:
            event_parts.append(_string(_EVENT_NAMES, b"\x12", event.name))
        if attributes:
            event_parts += _attributes(b"\x1a", attributes)
        if attributes is not None and (dropped := event.dropped_attributes):
            event_parts += (b"\x20", _varint(dropped))
        event_body = b"".join(event_parts)
        parts += (b"\x5a", _varint(len(event_body)), event_body)
    if dropped := span.dropped_events:
        parts += (b"\x60", _varint(dropped))
    for link in span.links:
        linked = link.context
        link_parts = [
            b"\x0a\x10",
            linked.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            linked.span_id.to_bytes(8, "big"),
        ]
        if linked.trace_state:
            link_parts.append(_field(b"\x1a", linked.trace_state.to_header().encode()))
        link_parts += _attributes(b"\x22", link.attributes)
        if dropped := link.dropped_attributes:
            link_parts += (b"\x28", _varint(dropped))
        link_parts += (_LINK_FLAGS, _REMOTE if linked.is_remote else _LOCAL)
        parts.append(_field(b"\x6a", b"".join(link_parts)))
    if dropped := span.dropped_links:
        parts += (b"\x70", _varint(dropped))
    status = span.status
    if status.description:
        message = _field(b"\x12", status.description.encode())
        code = status.status_code.value
        parts.append(_field(b"\x7a", message + b"\x18" + _varint(code) if code else message))
    else:
        parts.append(_STATUSES[status.status_code])
    parts += (_SPAN_FLAGS, _REMOTE if parent is not None and parent.is_remote else _LOCAL)
    return b"".join(parts)


def _resource(resource: Resource) -> tuple[bytes, bytes]:
    """ResourceSpans' fields before its spans (the resource) and after (its schema URL)."""
    cached = _RESOURCES.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached[1]
    encoded = (
        _field(b"\x0a", b"".join(_attributes(b"\x0a", resource.attributes))),
        _field(b"\x1a", resource.schema_url.encode()) if resource.schema_url else b"",
    )
    if len(_RESOURCES) >= _PARTS_MAX:
        _RESOURCES.clear()
    _RESOURCES[id(resource)] = (resource, encoded)
    return encoded


def _scope(scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
    """ScopeSpans' fields before its spans (the scope) and after (its schema URL)."""
    cached = _SCOPES.get(id(scope))
    if cached is not None and cached[0] is scope:
        return cached[1]
    if scope is None:
        encoded = (b"\x0a\x00", b"")
    else:
        fields = [_field(b"\x0a", scope.name.encode()) if scope.name else b""]
        fields.append(_field(b"\x12", scope.version.encode()) if scope.version else b"")
        fields += _attributes(b"\x1a", scope.attributes)
        schema_url = scope.schema_url
        encoded = (
            _field(b"\x0a", b"".join(fields)),
            _field(b"\x1a", schema_url.encode()) if schema_url else b"",
        )
    if len(_SCOPES) >= _PARTS_MAX:
        _SCOPES.clear()
    _SCOPES[id(scope)] = (scope, encoded)
    return encoded


def encode_export_request(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized `ExportTraceServiceRequest` of `spans`, grouped by resource, then by
    instrumentation scope, in the order they first appear (as the SDK groups them)."""
    groups: dict[tuple[bytes, bytes], dict[tuple[bytes, bytes], list[bytes]]] = {}
    for span in spans:
        by_scope = groups.setdefault(_resource(span.resource), {})
        by_scope.setdefault(_scope(span.instrumentation_scope or None), []).append(
            _field(b"\x12", _span(span))
        )
    request = []
    for (resource, resource_schema), scopes in groups.items():
        scope_spans = [
            _field(b"\x12", scope + b"".join(encoded) + scope_schema)
            for (scope, scope_schema), encoded in scopes.items()
        ]
        request.append(_field(b"\x0a", resource + b"".join(scope_spans) + resource_schema))
    return b"".join(request)


class OTLPWireSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter, sending `encode_export_request`'s bytes.

    `export` is the SDK's own (opentelemetry-exporter-otlp-proto-http 1.45) with the encoder
    replaced: it uses the parent's private `_shutdown`, `_metrics`, `_max_request_size` and
    `_client` (the HTTP transport). A version that renames them fails
    tests/tracing/test_otlp_encoding.py's exporter tests and every end-to-end trace test."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                body = encode_export_request(spans)
            except Exception as error:  # a span the encoder cannot write loses its batch
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(body, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                    "%d bytes.",
                    len(body),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(body)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(body)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {"http.response.status_code": sent.status_code}
                    if sent.status_code is not None
                    else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

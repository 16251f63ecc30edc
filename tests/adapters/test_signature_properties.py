"""Properties of every signature scheme and spelling (docs/reference/ingress.md, PROVIDERS.md).

For each variant: a signature made with the secret verifies for any body; changing any one byte
of the body, the signed timestamp or the signature fails with InvalidSignature (and nothing
else); any one of several secrets verifies; a timestamp just outside the tolerance fails in both
directions while one just inside passes; and error details never repeat a secret or signature.

Headers are mutated byte-wise and read back as Latin-1, which is how HTTP servers hand header
bytes to applications: a mutation may well produce `²` or a control character.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.errors import InvalidSignature
from adapters.registry import ADAPTERS
from adapters.request import InboundRequest
from adapters.signatures import hmac_sha256
from tests.support import NOW, SECRET, settings_for

PROPERTY = settings(
    max_examples=200,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
QUICK = settings(PROPERTY, max_examples=60)


@dataclass(frozen=True)
class Span:
    """Where a signed value sits in the request: header name and [start, end) within its value."""

    header: str
    start: int
    end: int


@dataclass(frozen=True)
class Signed:
    headers: dict[str, str]
    timestamp: Span | None
    signatures: tuple[Span, ...]


@dataclass(frozen=True)
class Variant:
    """One spelling of one provider's scheme."""

    id: str
    adapter: str
    # (body, secrets to sign with, signing time) -> the signed request headers.
    make: Callable[[bytes, Sequence[str], datetime], Signed]
    timestamped: bool = True


def _hex(secret: str, message: bytes) -> str:
    return hmac_sha256(secret, message).hex()


def _unix(when: datetime) -> str:
    return str(int(when.timestamp()))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_offset(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def _signed_header(
    header: str, prefix: str, t: str, sep: str, key: str, digests: Sequence[str]
) -> Signed:
    """`t=<t><sep><key>=<hex>[<sep><key>=<hex>...]` with spans of t and of every digest."""
    value = f"{prefix}t={t}"
    t_span = Span(header, len(prefix) + 2, len(prefix) + 2 + len(t))
    spans = []
    for digest in digests:
        value += f"{sep}{key}="
        spans.append(Span(header, len(value), len(value) + len(digest)))
        value += digest
    return Signed({header: value}, t_span, tuple(spans))


def finfusion_variant() -> Variant:
    def make(body: bytes, secrets: Sequence[str], when: datetime) -> Signed:
        t = _unix(when)
        digests = [_hex(secret, t.encode() + b"." + body) for secret in secrets]
        return _signed_header("x-finfusion-signature", "", t, ",", "v1", digests)

    return Variant("finfusion", "finfusion", make)


def finexer_variant(sep: str, key: str, spelling: Callable[[datetime], str], name: str) -> Variant:
    def make(body: bytes, secrets: Sequence[str], when: datetime) -> Signed:
        t = spelling(when)
        digests = [_hex(secret, t.encode() + b"." + body) for secret in secrets]
        return _signed_header("fx-signature", "", t, sep, key, digests)

    return Variant(
        f"finexer-{name}-{key}-{'semicolon' if sep == ';' else 'comma'}", "finexer", make
    )


def finaegis_plain_variant() -> Variant:
    def make(body: bytes, secrets: Sequence[str], when: datetime) -> Signed:
        # One header carries one digest: with several secrets the provider signed with the first.
        digest = _hex(secrets[0], body)
        header = "x-webhook-signature"
        return Signed({header: f"sha256={digest}"}, None, (Span(header, 7, 7 + len(digest)),))

    return Variant("finaegis-plain", "finaegis", make, timestamped=False)


def finaegis_timestamped_variant(spelling: Callable[[datetime], str], name: str) -> Variant:
    def make(body: bytes, secrets: Sequence[str], when: datetime) -> Signed:
        t = spelling(when)
        digest = _hex(secrets[0], t.encode() + b"." + body)
        header = "x-finaegis-signature"
        return Signed(
            {"x-finaegis-timestamp": t, header: f"sha256={digest}"},
            Span("x-finaegis-timestamp", 0, len(t)),
            (Span(header, 7, 7 + len(digest)),),
        )

    return Variant(f"finaegis-timestamped-{name}", "finaegis", make)


VARIANTS: tuple[Variant, ...] = (
    finfusion_variant(),
    # Every pair of (separator, key, timestamp spelling) appears in one of these.
    finexer_variant(";", "s", _iso, "iso"),
    finexer_variant(";", "v1", _unix, "unix"),
    finexer_variant(",", "s", _unix, "unix"),
    finexer_variant(",", "v1", _iso, "iso"),
    finexer_variant(";", "s", _iso_offset, "isooffset"),
    finexer_variant(",", "v1", _iso_offset, "isooffset"),
    finaegis_plain_variant(),
    finaegis_timestamped_variant(_unix, "unix"),
    finaegis_timestamped_variant(_iso, "iso"),
    finaegis_timestamped_variant(_iso_offset, "isooffset"),
)
TIMESTAMPED = tuple(variant for variant in VARIANTS if variant.timestamped)
# One unix-time variant per adapter, for the reproducers of what the properties find.
UNIX_PER_ADAPTER = tuple(
    variant
    for variant in VARIANTS
    if variant.id in ("finfusion", "finexer-unix-v1-semicolon", "finaegis-timestamped-unix")
)
MULTI_DIGEST = tuple(variant for variant in VARIANTS if variant.adapter != "finaegis")


def by_id(variants: Sequence[Variant]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("variant", variants, ids=[v.id for v in variants])


def verify(
    variant: Variant,
    body: bytes,
    headers: dict[str, str],
    secrets: Sequence[str] = (SECRET,),
    tolerance: int = 300,
) -> str:
    settings = settings_for(variant.adapter, secrets=list(secrets), tolerance_seconds=tolerance)
    request = InboundRequest(body=body, headers=headers)
    return ADAPTERS[variant.adapter].verify(request, settings, NOW)


def rejected(
    variant: Variant,
    body: bytes,
    headers: dict[str, str],
    secrets: Sequence[str] = (SECRET,),
    tolerance: int = 300,
) -> str:
    """The detail of the InvalidSignature raised; any other outcome fails the test."""
    with pytest.raises(InvalidSignature) as caught:
        verify(variant, body, headers, secrets, tolerance)
    detail = caught.value.detail
    assert detail
    for secret in secrets:
        assert secret not in detail, "a secret leaked into the error detail"
    for value in headers.values():
        assert value not in detail or len(value) < 8, "a header value leaked into the detail"
        for part in value.replace(";", ",").split(","):
            digest = part.partition("=")[2]
            if len(digest) >= 16:
                assert digest not in detail, "a signature leaked into the error detail"
    return detail


def mutate(signed: Signed, span: Span, index: int, byte: int) -> dict[str, str] | None:
    """The headers with one byte inside `span` replaced, or None when the byte is unchanged."""
    value = signed.headers[span.header]
    raw = bytearray(value.encode("latin-1"))
    position = span.start + index % (span.end - span.start)
    if raw[position] == byte:
        return None
    raw[position] = byte
    headers = dict(signed.headers)
    headers[span.header] = raw.decode("latin-1")
    return headers


BODIES = st.binary(max_size=512)
SECRETS = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=12, max_size=40
)
OFFSETS = st.integers(min_value=-290, max_value=290).map(lambda s: timedelta(seconds=s))


def test_every_signed_adapter_has_variants() -> None:
    assert {variant.adapter for variant in VARIANTS} == {
        name for name, adapter in ADAPTERS.items() if adapter.signed
    }


# Correct signatures verify.


@by_id(VARIANTS)
@PROPERTY
@given(body=BODIES, secret=SECRETS, offset=OFFSETS)
def test_signature_made_with_the_secret_verifies_for_any_body(
    variant: Variant, body: bytes, secret: str, offset: timedelta
) -> None:
    signed = variant.make(body, [secret], NOW + offset)
    assert verify(variant, body, signed.headers, [secret]) == "signature"


# Any one-byte change fails.


@by_id(VARIANTS)
@PROPERTY
@given(body=BODIES, index=st.integers(min_value=0), byte=st.integers(0, 255))
def test_any_one_byte_change_to_the_body_fails(
    variant: Variant, body: bytes, index: int, byte: int
) -> None:
    signed = variant.make(body, [SECRET], NOW)
    changed = bytearray(body) or bytearray(b"\0")
    if body:
        position = index % len(body)
        if changed[position] == byte:
            byte ^= 0x01
        changed[position] = byte
    rejected(variant, bytes(changed), signed.headers)


@by_id(VARIANTS)
@QUICK
@given(body=BODIES, extra=st.binary(min_size=1, max_size=3))
def test_appending_or_dropping_body_bytes_fails(
    variant: Variant, body: bytes, extra: bytes
) -> None:
    signed = variant.make(body, [SECRET], NOW)
    rejected(variant, body + extra, signed.headers)
    if body:
        rejected(variant, body[:-1], signed.headers)


@by_id(TIMESTAMPED)
@PROPERTY
@given(body=BODIES, index=st.integers(min_value=0), byte=st.integers(0, 255))
@example(body=b"{}", index=7, byte=0xB2)  # `²`: a digit to str.isdigit, not to int()
@example(body=b"{}", index=0, byte=ord(" "))
def test_any_one_byte_change_to_the_timestamp_fails(
    variant: Variant, body: bytes, index: int, byte: int
) -> None:
    signed = variant.make(body, [SECRET], NOW)
    assert signed.timestamp is not None
    headers = mutate(signed, signed.timestamp, index, byte)
    if headers is not None:
        rejected(variant, body, headers)


@by_id(VARIANTS)
@PROPERTY
@given(body=BODIES, index=st.integers(min_value=0), byte=st.integers(0, 255))
def test_any_one_byte_change_to_the_signature_fails(
    variant: Variant, body: bytes, index: int, byte: int
) -> None:
    signed = variant.make(body, [SECRET], NOW)
    span = signed.signatures[0]
    value = signed.headers[span.header]
    original = value[span.start + index % (span.end - span.start)]
    # Hex is read in either case: `a` -> `A` spells the same digest, so it is not a change.
    if chr(byte).lower() == original.lower():
        return
    headers = mutate(signed, span, index, byte)
    assert headers is not None
    rejected(variant, body, headers)


@by_id(UNIX_PER_ADAPTER)
def test_superscript_digit_in_the_timestamp_is_an_invalid_signature(
    variant: Variant,
) -> None:
    # Reproducer of what the timestamp property finds: `²` (Latin-1 0xB2) passes str.isdigit().
    signed = variant.make(b"{}", [SECRET], NOW)
    assert signed.timestamp is not None
    headers = mutate(signed, signed.timestamp, 3, 0xB2)
    assert headers is not None
    rejected(variant, b"{}", headers)


@by_id(UNIX_PER_ADAPTER)
def test_timestamp_with_thousands_of_digits_is_an_invalid_signature(variant: Variant) -> None:
    signed = variant.make(b"{}", [SECRET], NOW)
    assert signed.timestamp is not None
    span = signed.timestamp
    value = signed.headers[span.header]
    headers = dict(signed.headers)
    headers[span.header] = value[: span.start] + "9" * 5000 + value[span.end :]
    rejected(variant, b"{}", headers)


# Rotation: any one of several secrets verifies, none fails.


@by_id(VARIANTS)
@QUICK
@given(
    body=BODIES,
    secrets=st.lists(SECRETS, min_size=2, max_size=4, unique=True),
    data=st.data(),
)
def test_signature_by_any_one_of_several_secrets_verifies(
    variant: Variant, body: bytes, secrets: list[str], data: st.DataObject
) -> None:
    signer = data.draw(st.sampled_from(secrets), label="signer")
    signed = variant.make(body, [signer], NOW)
    assert verify(variant, body, signed.headers, secrets) == "signature"


@by_id(VARIANTS)
@QUICK
@given(body=BODIES, secrets=st.lists(SECRETS, min_size=3, max_size=5, unique=True))
def test_signature_by_none_of_the_secrets_fails(
    variant: Variant, body: bytes, secrets: list[str]
) -> None:
    *configured, outsider = secrets
    signed = variant.make(body, [outsider], NOW)
    detail = rejected(variant, body, signed.headers, configured)
    assert outsider not in detail


@by_id(MULTI_DIGEST)
@QUICK
@given(body=BODIES, secrets=st.lists(SECRETS, min_size=2, max_size=4, unique=True))
def test_header_with_one_digest_per_secret_verifies_with_any_one_configured(
    variant: Variant, body: bytes, secrets: list[str]
) -> None:
    signed = variant.make(body, secrets, NOW)
    for secret in secrets:
        assert verify(variant, body, signed.headers, [secret]) == "signature"
    rejected(variant, body, signed.headers, ["not-" + secret for secret in secrets])


@by_id(VARIANTS)
def test_signed_source_without_secrets_fails(variant: Variant) -> None:
    signed = variant.make(b"{}", [SECRET], NOW)
    assert "no secret" in rejected(variant, b"{}", signed.headers, [])


# Tolerance: both directions, either side of the edge.


@by_id(TIMESTAMPED)
@QUICK
@given(body=BODIES, tolerance=st.integers(min_value=1, max_value=7 * 86400))
def test_timestamp_just_outside_the_tolerance_fails_both_ways(
    variant: Variant, body: bytes, tolerance: int
) -> None:
    for direction, word in ((-1, "older"), (1, "ahead")):
        when = NOW + direction * timedelta(seconds=tolerance + 1)
        signed = variant.make(body, [SECRET], when)
        assert word in rejected(variant, body, signed.headers, tolerance=tolerance)


@by_id(TIMESTAMPED)
@QUICK
@given(body=BODIES, tolerance=st.integers(min_value=1, max_value=7 * 86400))
def test_timestamp_just_inside_the_tolerance_passes_both_ways(
    variant: Variant, body: bytes, tolerance: int
) -> None:
    for direction in (-1, 1):
        when = NOW + direction * timedelta(seconds=tolerance - 1)
        signed = variant.make(body, [SECRET], when)
        assert verify(variant, body, signed.headers, tolerance=tolerance) == "signature"


@by_id(TIMESTAMPED)
def test_default_tolerance_is_five_minutes(variant: Variant) -> None:
    inside = variant.make(b"{}", [SECRET], NOW - timedelta(seconds=299))
    outside = variant.make(b"{}", [SECRET], NOW - timedelta(seconds=301))
    settings = settings_for(variant.adapter)
    adapter = ADAPTERS[variant.adapter]
    assert adapter.verify(InboundRequest(body=b"{}", headers=inside.headers), settings, NOW)
    with pytest.raises(InvalidSignature):
        adapter.verify(InboundRequest(body=b"{}", headers=outside.headers), settings, NOW)


def test_finexer_fractional_iso_timestamp_a_microsecond_too_old_fails() -> None:
    too_old = NOW - timedelta(seconds=300, microseconds=1)
    t = too_old.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    header = f"t={t};s={_hex(SECRET, t.encode() + b'.{}')}"
    assert "older" in rejected(VARIANTS[1], b"{}", {"fx-signature": header})
    assert VARIANTS[1].adapter == "finexer"


# Error details.


@by_id(VARIANTS)
@QUICK
@given(body=BODIES, secret=SECRETS, garbage=st.text(alphabet="0123456789abcdefABCDEF", min_size=1))
def test_error_details_never_contain_the_secret_or_the_signature(
    variant: Variant, body: bytes, secret: str, garbage: str
) -> None:
    signed = variant.make(body, [secret], NOW)
    # Wrong body, and a header with hex digits appended to the signature.
    rejected(variant, body + b"x", signed.headers, [secret])
    span = signed.signatures[0]
    value = signed.headers[span.header]
    headers = dict(signed.headers)
    headers[span.header] = value[: span.end] + garbage + value[span.end :]
    rejected(variant, body, headers, [secret])

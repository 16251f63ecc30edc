"""Properties of the signature schemes a described provider may have (docs/reference/providers.md).

For each variant (one per scheme and per spelling that matters: pairs and literal formats, hex
and base64, every key form, timestamps in the header or their own header in s, ms and ISO 8601,
signed `{url}` and `{header:NAME}`, the three public-key algorithms): what the signer makes
verifies for any body; any one changed byte of the body or the signed timestamp, a wrong
signature, a wrong secret, a timestamp outside the tolerance either way and a missing header
are refused with InvalidSignature, and nothing else; any one of several secrets verifies, and
so does a header carrying the provider's old and new signatures. Error details never repeat a
secret or a signature.
"""

from __future__ import annotations

import base64
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import Adapter
from adapters.described import described_adapter, parse_description, secret_problem
from adapters.described.schemes import public_key_problem
from adapters.errors import InvalidSignature
from adapters.request import InboundRequest
from adapters.source import Secret, SourceSettings
from tests.support import NOW

PROPERTY = settings(
    max_examples=60,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PUBLIC_URL = "https://hooks.example.com/webhooks/ledgerly-main"
EVENT = '[event]\ntype = "type"\n'


@dataclass(frozen=True)
class Variant:
    """One described scheme, and how to make its secrets."""

    id: str
    signature: str
    # random bytes -> a secret in the variant's key form (or a private key PEM)
    secret: Callable[[bytes], str] = field(default=lambda raw: "sk_" + raw.hex())
    # where the signature's text sits in its header: a regex group
    signature_pattern: str = r"(?:v1=|s=|^|, )([A-Za-z0-9+/=_-]+)$"
    timestamp_header: str | None = None
    # the signed timestamp's text in the headers, for the tampering property
    timestamp_pattern: str | None = None
    public_key: str | None = None

    @property
    def adapter(self) -> Adapter:
        return _adapter(self.signature)


@cache
def _adapter(signature: str) -> Adapter:
    description, problems = parse_description(
        tomllib.loads(f"[signature]\n{signature}\n{EVENT}"), "providers.ledgerly"
    )
    assert problems == []
    assert description is not None
    return described_adapter("ledgerly", description, "config")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@cache
def _private_key(algorithm: str) -> tuple[str, str]:
    """(private PEM, public PEM); RSA keys are slow to make, so once per run."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa-sha256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ecdsa-p256-sha256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _public_key_variant(id: str, algorithm: str, signature: str, **extra: object) -> Variant:
    private, public = _private_key(algorithm)
    return Variant(
        id,
        f'scheme = "public_key"\nalgorithm = "{algorithm}"\n{signature}',
        secret=lambda raw: private,
        public_key=public,
        **extra,  # type: ignore[arg-type]
    )


UNIX = r"t=([0-9]+)"
VARIANTS: tuple[Variant, ...] = (
    Variant(
        "stripe-like",
        'scheme = "hmac"\nheader = "X-Ledgerly-Signature"\n'
        'format = "t={timestamp},v1={signature}"\nsigned = "{timestamp}.{body}"\n'
        'timestamp_unit = "s"',
        timestamp_pattern=UNIX,
    ),
    Variant(
        "semicolon-iso8601-base64-whsec",
        'scheme = "hmac"\nheader = "x-sig"\nformat = "t={timestamp};s={signature}"\n'
        'encoding = "base64"\nsigned = "{timestamp}.{body}"\ntimestamp_unit = "iso8601"\n'
        'key = "whsec"',
        secret=lambda raw: "whsec_" + _b64(raw),
        timestamp_pattern=r"t=([0-9TZ:-]+)",
    ),
    Variant(
        "literal-sha512-timestamp-header-ms-signed-header",
        'scheme = "hmac"\nalgorithm = "sha512"\nheader = "Authorization"\n'
        'format = "HMAC {signature}"\nencoding = "base64"\ntimestamp_header = "X-Time"\n'
        'timestamp_unit = "ms"\nsigned = "{timestamp}:{header:X-Request-Id}:{body}"\n'
        'key = "base64"',
        secret=_b64,
        signature_pattern=r"^HMAC ([A-Za-z0-9+/=]+)$",
        timestamp_header="x-time",
        timestamp_pattern=r"^([0-9]+)$",
    ),
    Variant(
        "sha1-hex-key-url",
        'scheme = "hmac"\nalgorithm = "sha1"\nheader = "x-sig"\nsigned = "{url}{body}"\n'
        'key = "hex"',
        secret=lambda raw: raw.hex(),
        signature_pattern=r"^([0-9a-f]+)$",
    ),
    Variant(
        "prefixed-unset-unit",
        'scheme = "hmac"\nheader = "x-sig"\nformat = "sha256={signature}"\n'
        'timestamp_header = "x-ts"\nsigned = "{timestamp}.{body}"',
        signature_pattern=r"^sha256=([0-9a-f]+)$",
        timestamp_header="x-ts",
        timestamp_pattern=r"^([0-9]+)$",
    ),
    Variant(
        "standard_webhooks",
        'scheme = "standard_webhooks"',
        secret=lambda raw: "whsec_" + _b64(raw),
        signature_pattern=r"^v1,([A-Za-z0-9+/=]+)$",
        timestamp_header="webhook-timestamp",
        timestamp_pattern=r"^([0-9]+)$",
    ),
    _public_key_variant(
        "ed25519",
        "ed25519",
        'header = "x-signature"\ntimestamp_header = "x-ts"\nsigned = "{timestamp}.{body}"',
        signature_pattern=r"^([A-Za-z0-9+/=]+)$",
        timestamp_header="x-ts",
        timestamp_pattern=r"^([0-9]+)$",
    ),
    _public_key_variant(
        "ecdsa-p256-hex-pairs",
        "ecdsa-p256-sha256",
        'header = "x-signature"\nformat = "t={timestamp},sig={signature}"\nencoding = "hex"\n'
        'signed = "{timestamp}.{body}"',
        signature_pattern=r"sig=([0-9a-f]+)$",
        timestamp_pattern=UNIX,
    ),
    _public_key_variant(
        "rsa-sha256",
        "rsa-sha256",
        'header = "X-Signature-SHA256"',
        signature_pattern=r"^([A-Za-z0-9+/=]+)$",
    ),
)
TIMESTAMPED = tuple(v for v in VARIANTS if v.timestamp_pattern is not None)
SHARED_SECRET = tuple(v for v in VARIANTS if v.public_key is None)


def by_id(variants: tuple[Variant, ...]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("variant", variants, ids=[v.id for v in variants])


def source(variant: Variant, secrets: list[str], tolerance: int = 300) -> SourceSettings:
    return SourceSettings(
        name="ledgerly-main",
        adapter="ledgerly",
        secrets=() if variant.public_key else tuple(Secret(s) for s in secrets),
        tolerance_seconds=tolerance,
        public_url=PUBLIC_URL,
        public_key=variant.public_key,
    )


def sign(variant: Variant, body: bytes, secret: str, when: datetime = NOW) -> dict[str, str]:
    settings = source(variant, [secret])
    return variant.adapter.sign_for_source(body, secret, when, settings)


def verify(
    variant: Variant, body: bytes, headers: dict[str, str], secrets: list[str], tolerance: int = 300
) -> str:
    request = InboundRequest(body=body, headers=headers)
    return variant.adapter.verify(request, source(variant, secrets, tolerance), NOW)


def rejected(
    variant: Variant, body: bytes, headers: dict[str, str], secrets: list[str], tolerance: int = 300
) -> str:
    with pytest.raises(InvalidSignature) as caught:
        verify(variant, body, headers, secrets, tolerance)
    detail = caught.value.detail
    assert detail
    for secret in secrets:
        assert secret not in detail, "a secret leaked into the error detail"
    for value in headers.values():
        for part in re.split(r"[ ,;=]", value):
            assert len(part) < 16 or part not in detail, "a header value leaked into the detail"
    return detail


def signature_span(variant: Variant, headers: dict[str, str]) -> tuple[str, int, int]:
    name = variant.adapter.signature_headers[0]
    match = re.search(variant.signature_pattern, headers[name])
    assert match is not None, headers[name]
    return name, match.start(1), match.end(1)


def timestamp_span(variant: Variant, headers: dict[str, str]) -> tuple[str, int, int]:
    assert variant.timestamp_pattern is not None
    name = variant.timestamp_header or variant.adapter.signature_headers[0]
    match = re.search(variant.timestamp_pattern, headers[name])
    assert match is not None, headers[name]
    return name, match.start(1), match.end(1)


def replaced(headers: dict[str, str], name: str, start: int, end: int, text: str) -> dict[str, str]:
    changed = dict(headers)
    changed[name] = headers[name][:start] + text + headers[name][end:]
    return changed


RAW_SECRETS = st.binary(min_size=16, max_size=40)
BODIES = st.binary(max_size=256)
OFFSETS = st.integers(min_value=-299, max_value=299).map(lambda s: timedelta(seconds=s))


# What the provider sends verifies.


@by_id(VARIANTS)
@PROPERTY
@given(body=BODIES, raw=RAW_SECRETS, offset=OFFSETS)
def test_a_signed_request_verifies_for_any_body(
    variant: Variant, body: bytes, raw: bytes, offset: timedelta
) -> None:
    secret = variant.secret(raw)
    headers = sign(variant, body, secret, NOW + offset)
    assert verify(variant, body, headers, [secret]) == "signature"


# Any change is refused.


@by_id(VARIANTS)
@PROPERTY
@given(body=BODIES, index=st.integers(min_value=0), byte=st.integers(0, 255))
def test_any_one_byte_change_to_the_body_is_refused(
    variant: Variant, body: bytes, index: int, byte: int
) -> None:
    secret = variant.secret(b"0123456789abcdef")
    headers = sign(variant, body, secret)
    changed = bytearray(body) or bytearray(b"\0")
    if body:
        position = index % len(body)
        changed[position] = byte if changed[position] != byte else byte ^ 1
    rejected(variant, bytes(changed), headers, [secret])


@by_id(TIMESTAMPED)
@PROPERTY
@given(body=BODIES, index=st.integers(min_value=0), byte=st.integers(0x20, 0xFF))
def test_any_one_byte_change_to_the_signed_timestamp_is_refused(
    variant: Variant, body: bytes, index: int, byte: int
) -> None:
    secret = variant.secret(b"0123456789abcdef")
    headers = sign(variant, body, secret)
    name, start, end = timestamp_span(variant, headers)
    position = start + index % (end - start)
    if headers[name][position] == chr(byte):
        return
    changed = replaced(headers, name, position, position + 1, chr(byte))
    rejected(variant, body, changed, [secret])


@by_id(VARIANTS)
@PROPERTY
@given(body=BODIES, index=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_signature_with_any_bit_changed_is_refused(
    variant: Variant, body: bytes, index: int, bit: int
) -> None:
    secret = variant.secret(b"0123456789abcdef")
    headers = sign(variant, body, secret)
    name, start, end = signature_span(variant, headers)
    text = headers[name][start:end]
    hexadecimal = re.fullmatch(r"[0-9a-f]+", text) is not None
    raw = bytearray(bytes.fromhex(text) if hexadecimal else base64.b64decode(text))
    raw[index % len(raw)] ^= 1 << bit
    forged = raw.hex() if hexadecimal else base64.b64encode(bytes(raw)).decode()
    rejected(variant, body, replaced(headers, name, start, end, forged), [secret])


@by_id(VARIANTS)
@PROPERTY
@given(
    body=BODIES,
    cut=st.integers(min_value=1, max_value=8),
    junk=st.sampled_from(["!", "é", "*", "%"]),
)
def test_a_signature_that_is_not_of_its_encoding_is_refused(
    variant: Variant, body: bytes, cut: int, junk: str
) -> None:
    secret = variant.secret(b"0123456789abcdef")
    headers = sign(variant, body, secret)
    name, _, end = signature_span(variant, headers)
    rejected(variant, body, replaced(headers, name, end - cut, end, junk), [secret])


@by_id(SHARED_SECRET)
@PROPERTY
@given(body=BODIES, raw=RAW_SECRETS, other=RAW_SECRETS)
def test_a_wrong_secret_is_refused(variant: Variant, body: bytes, raw: bytes, other: bytes) -> None:
    if raw == other:
        return
    headers = sign(variant, body, variant.secret(other))
    detail = rejected(variant, body, headers, [variant.secret(raw)])
    assert detail.startswith("no signature matches")


def test_a_public_key_that_did_not_sign_is_refused() -> None:
    variant = next(v for v in VARIANTS if v.id == "ed25519")
    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    headers = sign(variant, b"{}", other.decode())
    assert rejected(variant, b"{}", headers, []).startswith("no signature matches")


# Tolerance, both ways.


@by_id(TIMESTAMPED)
@PROPERTY
@given(
    body=BODIES,
    tolerance=st.integers(min_value=1, max_value=3600),
    beyond=st.integers(min_value=1, max_value=10**6),
    ahead=st.booleans(),
)
def test_a_timestamp_outside_the_tolerance_is_refused_either_way(
    variant: Variant, body: bytes, tolerance: int, beyond: int, ahead: bool
) -> None:
    secret = variant.secret(b"0123456789abcdef")
    offset = timedelta(seconds=tolerance + beyond)
    headers = sign(variant, body, secret, NOW + offset if ahead else NOW - offset)
    detail = rejected(variant, body, headers, [secret], tolerance)
    assert detail.endswith("ahead" if ahead else f"older than {tolerance} s")
    within = timedelta(seconds=tolerance)
    headers = sign(variant, body, secret, NOW + within if ahead else NOW - within)
    assert verify(variant, body, headers, [secret], tolerance) == "signature"


# Missing headers.


@by_id(VARIANTS)
def test_every_header_the_check_reads_is_required(variant: Variant) -> None:
    secret = variant.secret(b"0123456789abcdef")
    headers = sign(variant, b'{"type": "x"}', secret)
    for name in headers:
        without = {key: value for key, value in headers.items() if key != name}
        assert rejected(variant, b'{"type": "x"}', without, [secret]) == f"missing {name} header"


def test_a_source_without_its_key_material_verifies_nothing() -> None:
    hmac_variant = VARIANTS[0]
    headers = sign(hmac_variant, b"{}", "s")
    assert rejected(hmac_variant, b"{}", headers, []) == (
        "the source has no secret to verify signatures with"
    )
    url_variant = next(v for v in VARIANTS if v.id == "sha1-hex-key-url")
    secret = url_variant.secret(b"0123456789abcdef")
    headers = sign(url_variant, b"{}", secret)
    settings = SourceSettings(name="s", adapter="ledgerly", secrets=(Secret(secret),))
    with pytest.raises(InvalidSignature, match="no public_url"):
        url_variant.adapter.verify(InboundRequest(body=b"{}", headers=headers), settings, NOW)
    key_variant = next(v for v in VARIANTS if v.id == "rsa-sha256")
    settings = SourceSettings(name="s", adapter="ledgerly")
    with pytest.raises(InvalidSignature, match="no public_key"):
        key_variant.adapter.verify(InboundRequest(body=b"{}", headers={}), settings, NOW)


def test_a_signed_url_must_be_the_sources() -> None:
    variant = next(v for v in VARIANTS if v.id == "sha1-hex-key-url")
    secret = variant.secret(b"0123456789abcdef")
    settings = SourceSettings(
        name="s", adapter="ledgerly", secrets=(Secret(secret),), public_url=PUBLIC_URL + "x"
    )
    headers = variant.adapter.sign_for_source(b"{}", secret, NOW, settings)
    rejected(variant, b"{}", headers, [secret])


# Rotation.


@by_id(SHARED_SECRET)
@PROPERTY
@given(body=BODIES, old=RAW_SECRETS, new=RAW_SECRETS, first=st.booleans())
def test_any_of_several_secrets_verifies(
    variant: Variant, body: bytes, old: bytes, new: bytes, first: bool
) -> None:
    secrets = [variant.secret(old), variant.secret(new)]
    headers = sign(variant, body, secrets[0] if first else secrets[1])
    assert verify(variant, body, headers, secrets) == "signature"


ROTATING = tuple(
    v
    for v in SHARED_SECRET
    if v.id in ("stripe-like", "semicolon-iso8601-base64-whsec", "standard_webhooks")
)


@by_id(ROTATING)
@PROPERTY
@given(body=BODIES, old=RAW_SECRETS, new=RAW_SECRETS, old_first=st.booleans())
def test_a_header_with_the_old_and_new_signatures_verifies_with_either_secret(
    variant: Variant, body: bytes, old: bytes, new: bytes, old_first: bool
) -> None:
    secrets = [variant.secret(old), variant.secret(new)]
    signed = [sign(variant, body, secret) for secret in secrets]
    name, start, end = signature_span(variant, signed[0])
    _, other_start, other_end = signature_span(variant, signed[1])
    other = signed[1][name][other_start:other_end]
    value = signed[0][name]
    separator = " v1," if variant.id == "standard_webhooks" else (";s=" if ";" in value else ",v1=")
    mine = value[start:end]
    if old_first:
        two = value + separator + other
    else:
        two = value[:start] + other + separator + mine + value[end:]
    headers = dict(signed[0])
    headers[name] = two
    for secret in secrets:
        assert verify(variant, body, headers, [secret]) == "signature"
    rejected(variant, body, headers, [variant.secret(b"an unrelated secret!")])


# Secrets and keys of the wrong form (what check-config can say about a source).


@pytest.mark.parametrize(
    ("secret", "form", "problem"),
    [
        ("zz", "hex", "expected hex (the provider's key = 'hex')"),
        ("not base64!", "base64", "expected base64 (the provider's key = 'base64')"),
        ("whsec_%%%", "whsec", "expected whsec_ followed by base64 (the provider's key = 'whsec')"),
        ("", "utf8", "the secret is empty"),
        ("anything", "utf8", None),
        ("whsec_c2VjcmV0", "whsec", None),
    ],
)
def test_secret_problems(secret: str, form: str, problem: str | None) -> None:
    assert secret_problem(secret, form) == problem  # type: ignore[arg-type]


def test_a_secret_of_the_wrong_form_is_refused_without_quoting_it() -> None:
    variant = next(v for v in VARIANTS if v.id == "sha1-hex-key-url")
    headers = sign(variant, b"{}", "00ff")
    assert rejected(variant, b"{}", headers, ["not-hex-secret"]) == "the source's secret is not hex"


def test_public_key_problems() -> None:
    _, rsa_public = _private_key("rsa-sha256")
    _, ed_public = _private_key("ed25519")
    assert public_key_problem(rsa_public, "rsa-sha256") is None
    assert public_key_problem("nope", "ed25519") == "not a PEM public key"
    assert public_key_problem(rsa_public, "ed25519") == (
        "not an Ed25519 public key (the provider's algorithm is ed25519)"
    )
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert public_key_problem(p384.decode(), "ecdsa-p256-sha256") == (
        "not an ECDSA P-256 public key (its curve is secp384r1)"
    )
    assert public_key_problem(ed_public, "ed25519") is None


# Standard Webhooks: the reference library agrees.


@PROPERTY
@given(body=st.binary(max_size=128).map(lambda b: b.hex().encode()), raw=RAW_SECRETS)
def test_standard_webhooks_signatures_verify_with_the_reference_library(
    body: bytes, raw: bytes
) -> None:
    from standardwebhooks.webhooks import Webhook

    variant = next(v for v in VARIANTS if v.id == "standard_webhooks")
    secret = variant.secret(raw)
    when = datetime.now().astimezone()
    headers = variant.adapter.sign_for_source(body, secret, when, source(variant, [secret]))
    Webhook(secret).verify(body, headers, json_parse=False)
    request = InboundRequest(body=body, headers=headers)
    assert variant.adapter.verify(request, source(variant, [secret]), when) == "signature"


def test_svix_headers_are_read_when_the_standard_ones_are_absent() -> None:
    variant = next(v for v in VARIANTS if v.id == "standard_webhooks")
    secret = variant.secret(b"0123456789abcdef")
    headers = sign(variant, b"{}", secret)
    svix = {name.replace("webhook-", "svix-"): value for name, value in headers.items()}
    assert verify(variant, b"{}", svix, [secret]) == "signature"


def test_an_adapter_says_what_is_wrong_with_a_sources_keys() -> None:
    hex_keyed = next(v for v in VARIANTS if v.id == "sha1-hex-key-url").adapter
    settings = SourceSettings(
        name="s", adapter="ledgerly", secrets=(Secret("00ff"), Secret("not hex"))
    )
    assert hex_keyed.source_problems(settings) == [
        ("secrets[1]", "expected hex (the provider's key = 'hex')")
    ]
    rsa_keyed = next(v for v in VARIANTS if v.id == "rsa-sha256")
    _, ed_public = _private_key("ed25519")
    settings = SourceSettings(name="s", adapter="ledgerly", public_key=ed_public)
    assert rsa_keyed.adapter.source_problems(settings) == [
        ("public_key", "not an RSA public key (the provider's algorithm is rsa-sha256)")
    ]
    assert rsa_keyed.adapter.source_problems(source(rsa_keyed, [])) == []

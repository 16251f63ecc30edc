"""The signature schemes a described provider may have: hmac, standard_webhooks, public_key.

docs/reference/providers.md and docs/reference/ingress.md. Everything runs over the raw request
bytes; HMAC digests are compared in constant time, every candidate with every secret, so which
secret matched is not observable; several secrets (rotation) and several signatures in one header
(the provider's rotation) both verify when any pair matches. A signed timestamp must lie within the
source's `tolerance_seconds` of now, in both directions. Errors say what is wrong with the request's
form, never what it contains, and never quote a secret.

Each scheme also signs (what the provider would send), for tests, samples and benchmarks. A
`public_key` provider signs with its private key, so its signer takes a private key PEM where
the others take the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from cryptography.exceptions import InvalidSignature as CryptographyInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from adapters.described.templates import HeaderFormat, SignedTemplate, header_bytes
from adapters.errors import InvalidSignature
from adapters.request import InboundRequest
from adapters.signatures import require_secrets
from adapters.source import Secret, SourceSettings
from schemas.timestamps import TimestampError, parse_timestamp, utc_from_unix

__all__ = [
    "HmacAlgorithm",
    "HmacScheme",
    "KeyForm",
    "PublicKeyAlgorithm",
    "PublicKeyScheme",
    "SignatureEncoding",
    "SignedHeader",
    "StandardWebhooksScheme",
    "TimestampUnit",
    "hmac_key",
    "public_key_problem",
    "secret_problem",
]

HmacAlgorithm = Literal["sha1", "sha256", "sha512"]
PublicKeyAlgorithm = Literal["rsa-sha256", "ecdsa-p256-sha256", "ed25519"]
SignatureEncoding = Literal["hex", "base64"]
TimestampUnit = Literal["s", "ms", "iso8601"]
KeyForm = Literal["utf8", "base64", "hex", "whsec"]

_DIGEST_SIZE: dict[str, int] = {"sha1": 20, "sha256": 32, "sha512": 64}
_WHSEC = "whsec_"
_ASCII_DIGITS = frozenset("0123456789")
_MAX_SIGNATURE_TEXT = 2048


# --- Keys ---------------------------------------------------------------------------------------


def hmac_key(secret: str, form: KeyForm) -> bytes:
    """The HMAC key a source's secret stands for, or ValueError when it is not of that form.

    `whsec` is the Standard Webhooks form: base64 of the part after `whsec_` (padding optional,
    as that reference library allows).
    """
    if form == "utf8":
        return secret.encode()
    try:
        if form == "hex":
            return bytes.fromhex(secret)
        text = secret.removeprefix(_WHSEC) if form == "whsec" else secret
        return _base64(text)
    except ValueError:
        raise ValueError(f"not {_KEY_FORM_NAMES[form]}") from None


_KEY_FORM_NAMES: dict[str, str] = {
    "utf8": "text",
    "base64": "base64",
    "hex": "hex",
    "whsec": "whsec_ followed by base64",
}


def secret_problem(secret: str, form: KeyForm) -> str | None:
    """What is wrong with a source's secret for a key form (for check-config), or None."""
    try:
        key = hmac_key(secret, form)
    except ValueError as error:
        return f"expected {str(error).removeprefix('not ')} (the provider's key = {form!r})"
    return None if key else "the secret is empty"


def _keys(secrets: tuple[Secret, ...], form: KeyForm) -> list[bytes]:
    keys = []
    for secret in require_secrets(secrets):
        try:
            keys.append(hmac_key(secret.reveal(), form))
        except ValueError as error:
            # Says the form, never the secret.
            raise InvalidSignature(f"the source's secret is {error}") from None
    return keys


def _base64(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not; ValueError for anything else."""
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


# --- Timestamps ---------------------------------------------------------------------------------


def _signed_time(text: str, unit: TimestampUnit | None) -> datetime:
    """The time a signature timestamp says, in its unit (unset: unix seconds or ISO 8601)."""
    try:
        if unit in ("s", "ms"):
            if not text or not set(text) <= _ASCII_DIGITS or len(text) > 16:
                raise TimestampError("not a unix time")
            if unit == "ms":
                return utc_from_unix(Decimal(int(text)) / 1000)
            return utc_from_unix(int(text))
        if unit == "iso8601" and (not text or set(text) <= _ASCII_DIGITS):
            raise TimestampError("not an ISO 8601 time")
        return parse_timestamp(text)
    except TimestampError:
        raise InvalidSignature("malformed signature timestamp") from None


def _check_skew(when: datetime, now: datetime, tolerance_seconds: int) -> None:
    """Old timestamps are replays; timestamps from the future are replays prepared in advance."""
    skew = (now - when).total_seconds()
    if skew > tolerance_seconds:
        raise InvalidSignature(f"signature timestamp is older than {tolerance_seconds} s")
    if -skew > tolerance_seconds:
        raise InvalidSignature(f"signature timestamp is more than {tolerance_seconds} s ahead")


def _timestamp_text(now: datetime, unit: TimestampUnit | None) -> str:
    if unit == "iso8601":
        return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    seconds = int(now.timestamp())
    if unit == "ms":
        return str(seconds * 1000 + now.microsecond // 1000)
    return str(seconds)


# --- The header and the signed bytes, shared by hmac and public_key -----------------------------


@dataclass(frozen=True, slots=True)
class SignedHeader:
    """Where the signature is (header, format, encoding) and what it covers (`signed`)."""

    header: str
    format: HeaderFormat
    encoding: SignatureEncoding
    signed: SignedTemplate
    timestamp_header: str | None
    timestamp_unit: TimestampUnit | None

    def read(
        self, request: InboundRequest, settings: SourceSettings, now: datetime, length: int | None
    ) -> tuple[bytes, list[bytes]]:
        """(the signed bytes, every well-formed signature) of a request; the timestamp checked.

        A signature that is not of the encoding (or of the digest's length) is skipped, as one
        that does not match: with two in the header, the other may still verify.
        """
        value = request.headers.get(self.header)
        if value is None:
            raise InvalidSignature(f"missing {self.header} header")
        timestamp, texts = self.format.read(value, self.header)
        if self.timestamp_header is not None:
            timestamp = request.headers.get(self.timestamp_header)
            if timestamp is None:
                raise InvalidSignature(f"missing {self.timestamp_header} header")
        if self.signed.has_timestamp:
            assert timestamp is not None  # the description requires a source for it
            _check_skew(
                _signed_time(timestamp, self.timestamp_unit), now, settings.tolerance_seconds
            )
        # No signature of any scheme here is longer than this (RSA-4096 in hex is 1024): a
        # longer text is not decoded at all, whatever the header's size.
        limit = _MAX_SIGNATURE_TEXT if length is None else 2 * length + 4
        signatures = [
            signature
            for signature in (self._decode(text) for text in texts if len(text) <= limit)
            if signature is not None and (length is None or len(signature) == length)
        ]
        if not signatures:
            raise InvalidSignature(
                f"malformed {self.header} header: no {self.encoding} signature"
                + (f" of {length} bytes" if length is not None else "")
            )
        message = self.signed.render(request.body, timestamp, settings.public_url, request.headers)
        return message, signatures

    def _decode(self, text: str) -> bytes | None:
        try:
            return bytes.fromhex(text) if self.encoding == "hex" else _base64(text)
        except ValueError:
            return None

    def sign_with(
        self,
        make_signature: Callable[[bytes], bytes],
        body: bytes,
        now: datetime,
        url: str | None,
    ) -> dict[str, str]:
        """The headers a provider sends: the timestamp and any signed header made up for `body`."""
        timestamp = _timestamp_text(now, self.timestamp_unit)
        headers: dict[str, str] = {}
        if self.timestamp_header is not None:
            headers[self.timestamp_header] = timestamp
        for name in self.signed.header_names:
            headers.setdefault(name, _made_up_header(name, body, timestamp))
        if self.signed.has_url and url is None:
            raise ValueError("the scheme signs the source's public_url: sign for a source")
        message = self.signed.render(body, timestamp, url, headers)
        signature = make_signature(message)
        text = signature.hex() if self.encoding == "hex" else base64.b64encode(signature).decode()
        has_timestamp = self.format.has_timestamp
        headers[self.header] = self.format.write(text, timestamp if has_timestamp else None)
        return headers


def _require_match(signatures: list[bytes], expected: list[bytes]) -> None:
    """Pass when any signature equals any expected digest. Every pair is compared, in constant
    time: which secret matched is not observable beyond the number of secrets."""
    matched = False
    for signature in signatures:
        for digest in expected:
            matched |= hmac.compare_digest(signature, digest)
    if not matched:
        raise InvalidSignature("no signature matches the body with any of the source's secrets")


def _made_up_header(name: str, body: bytes, timestamp: str) -> str:
    """A value for a signed header the provider would send (an id, a nonce): stable per body."""
    return "h_" + hashlib.sha256(f"{name}\0{timestamp}\0".encode() + body).hexdigest()[:24]


# --- hmac ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HmacScheme:
    """HMAC over `signed`, keyed with the source's secret in its key form."""

    where: SignedHeader
    algorithm: HmacAlgorithm
    key: KeyForm

    def check(self, request: InboundRequest, settings: SourceSettings, now: datetime) -> None:
        keys = _keys(settings.secrets, self.key)
        message, signatures = self.where.read(request, settings, now, _DIGEST_SIZE[self.algorithm])
        _require_match(signatures, [hmac.digest(key, message, self.algorithm) for key in keys])

    def sign(
        self, body: bytes, secret: str, now: datetime, url: str | None = None
    ) -> dict[str, str]:
        key = hmac_key(secret, self.key)
        return self.where.sign_with(
            lambda message: hmac.digest(key, message, self.algorithm), body, now, url
        )


# --- public_key ---------------------------------------------------------------------------------

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_KEY_TYPES: dict[str, tuple[type[object], str]] = {
    "rsa-sha256": (rsa.RSAPublicKey, "an RSA public key"),
    "ecdsa-p256-sha256": (ec.EllipticCurvePublicKey, "an ECDSA P-256 public key"),
    "ed25519": (ed25519.Ed25519PublicKey, "an Ed25519 public key"),
}


@lru_cache(maxsize=64)
def _load_public_key(pem: str, algorithm: PublicKeyAlgorithm) -> PublicKey:
    """The source's key, parsed once per PEM text (ValueError saying what it is not)."""
    wanted, name = _KEY_TYPES[algorithm]
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ValueError("not a PEM public key") from None
    if not isinstance(key, wanted):
        raise ValueError(f"not {name} (the provider's algorithm is {algorithm})")
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"not {name} (its curve is {key.curve.name})")
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    return key


@lru_cache(maxsize=16)
def _load_private_key(pem: str) -> object:
    """A signer's private key, parsed once: loading an RSA key checks it, which is slow."""
    return serialization.load_pem_private_key(pem.encode(), password=None)


def public_key_problem(pem: str, algorithm: PublicKeyAlgorithm) -> str | None:
    """What is wrong with a source's `public_key` for an algorithm (for check-config), or None."""
    try:
        _load_public_key(pem, algorithm)
    except ValueError as error:
        return str(error)
    return None


def _verified(key: PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, message)
    except CryptographyInvalidSignature:
        return False
    return True


@dataclass(frozen=True, slots=True)
class PublicKeyScheme:
    """A signature by the provider's private key, checked with the source's `public_key`.

    Nothing secret is compared here: a public-key check leaks nothing worth timing.
    """

    where: SignedHeader
    algorithm: PublicKeyAlgorithm

    def check(self, request: InboundRequest, settings: SourceSettings, now: datetime) -> None:
        if settings.public_key is None:
            raise InvalidSignature("the source has no public_key to verify signatures with")
        try:
            key = _load_public_key(settings.public_key, self.algorithm)
        except ValueError as error:
            raise InvalidSignature(f"the source's public_key is {error}") from None
        message, signatures = self.where.read(request, settings, now, None)
        if not any(_verified(key, signature, message) for signature in signatures):
            raise InvalidSignature("no signature matches the body with the source's public_key")

    def sign(
        self, body: bytes, private_key_pem: str, now: datetime, url: str | None = None
    ) -> dict[str, str]:
        key = _load_private_key(private_key_pem)

        def make(message: bytes) -> bytes:
            if isinstance(key, rsa.RSAPrivateKey):
                return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key.sign(message, ec.ECDSA(hashes.SHA256()))
            if isinstance(key, ed25519.Ed25519PrivateKey):
                return key.sign(message)
            raise ValueError("not an RSA, ECDSA or Ed25519 private key")

        return self.where.sign_with(make, body, now, url)


# --- standard_webhooks --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StandardWebhooksScheme:
    """The Standard Webhooks specification: `webhook-id`, `webhook-timestamp` (unix seconds) and
    `webhook-signature` (space-separated `v1,<base64>`), HMAC-SHA256 keyed with the base64 after
    `whsec_`, over `<id>.<timestamp>.<body>`. Svix, which wrote the specification, sends the same
    headers named `svix-*`; those are read when the `webhook-*` ones are absent."""

    def check(self, request: InboundRequest, settings: SourceSettings, now: datetime) -> None:
        keys = _keys(settings.secrets, "whsec")
        headers = request.headers
        svix = "svix-signature" in headers and "webhook-signature" not in headers
        prefix = "svix-" if svix else "webhook-"
        values = []
        for name in ("id", "timestamp", "signature"):
            value = headers.get(prefix + name)
            if not value:
                raise InvalidSignature(f"missing {prefix}{name} header")
            values.append(value)
        message_id, timestamp, header = values
        _check_skew(_signed_time(timestamp, "s"), now, settings.tolerance_seconds)
        signatures = []
        for item in header.split(" "):
            version, comma, text = item.partition(",")
            # Other versions (v1a, asymmetric) are someone else's to check; skipped, not wrong.
            if version == "v1" and comma:
                try:
                    signatures.append(_base64(text))
                except ValueError:
                    continue
        if not signatures:
            raise InvalidSignature(f"malformed {prefix}signature header: no v1,<base64>")
        message = header_bytes(f"{message_id}.{timestamp}.") + request.body
        _require_match(signatures, [hmac.digest(key, message, "sha256") for key in keys])

    def sign(
        self, body: bytes, secret: str, now: datetime, url: str | None = None
    ) -> dict[str, str]:
        timestamp = _timestamp_text(now, "s")
        message_id = "msg_" + hashlib.sha256(timestamp.encode() + b"\0" + body).hexdigest()[:24]
        digest = hmac.digest(
            hmac_key(secret, "whsec"), f"{message_id}.{timestamp}.".encode() + body, "sha256"
        )
        return {
            "webhook-id": message_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        }

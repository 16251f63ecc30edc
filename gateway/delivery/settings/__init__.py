"""What a subscriber is, as the config file says it: the delivery keys every kind takes, here,
and each kind's own keys in its module beside this one (gateway/delivery/registry.py lists them).

Types are the schema (gateway/config/ reads the file into them): a key's type and bounds are its
annotation; what a type cannot say (a URL's scheme, a secret's form) is a check in the
annotation (`Annotated[str, check]`, a function that returns the value or raises ValueError with
the sentence check-config prints).

These modules import no client library: every process reads its config, and one that delivers
nothing loads none of them (gateway/delivery/registry.py builds the transports).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal
from urllib.parse import SplitResult

import msgspec

from adapters.source import Secret, split_url
from gateway.signing import decode_signing_secret

__all__ = [
    "STANDARD_WEBHOOKS_SCHEDULE",
    "Ordering",
    "SubscriberConfig",
    "article",
    "host_url",
    "signing_secret",
]

# Seconds before each retry: the Standard Webhooks recommendation after the immediate attempt
# (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h).
STANDARD_WEBHOOKS_SCHEDULE: tuple[float, ...] = (
    5,
    300,
    1800,
    7200,
    18000,
    36000,
    50400,
    72000,
    86400,
)
# docs/reference/ordering.md: "subject" sends one source's events about one subject one at a time,
# in the order they were committed; "none" sends everything in parallel.
Ordering = Literal["subject", "none"]

_WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
_MIN_WEBHOOK_KEY_BYTES = 16
_SIGNING_KEY_PREFIX = "whsk_"  # the Standard Webhooks v1a prefix
# 24 h, the longest a Retry-After is honoured too (docs/reference/delivery.md).
_MAX_RETRY_DELAY = 86400.0


def signing_secret(secret: Secret) -> Secret:
    """A Standard Webhooks signing secret: `whsec_` and the base64 of at least 16 bytes (v1), or
    `whsk_` and an Ed25519 key (v1a). No message quotes any part of it."""
    text = secret.reveal()
    if text.startswith(_SIGNING_KEY_PREFIX):
        decode_signing_secret(text)  # its ValueError names no part of the key
        return secret
    if not text.startswith(_WEBHOOK_SECRET_PREFIX):
        raise ValueError("expected whsec_ followed by base64 (a Standard Webhooks secret)")
    try:
        key = base64.b64decode(text.removeprefix(_WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ is not valid base64") from None
    if len(key) < _MIN_WEBHOOK_KEY_BYTES:
        raise ValueError(
            f"the key after whsec_ is too short: at least {_MIN_WEBHOOK_KEY_BYTES} bytes"
            " (base64 of random bytes)"
        )
    return secret


def article(kind: str) -> str:
    """`a redis`, `an amqp`, `an http` (said "aitch")."""
    return f"an {kind}" if kind[:1] in ("a", "e", "i", "o", "u", "h") else f"a {kind}"


def host_url(url: str, schemes: tuple[str, ...]) -> SplitResult:
    """`url`'s parts if it is a URL of one of `schemes` with a host; else ValueError saying
    what is wrong without quoting it (a URL may carry credentials)."""
    parts = split_url(url)
    if parts.scheme not in schemes:
        expected = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"expected {article(expected)} URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    return parts


class SubscriberConfig(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """The delivery keys every kind of subscriber takes; each kind is a subclass with its own
    (a tagged union on `kind`: gateway/delivery/registry.py finds the settings and the
    transport by it)."""

    kind: ClassVar[str]
    # What check-config says after "required for a redis subscriber" when a key is missing.
    required_hints: ClassVar[Mapping[str, str]] = {}

    name: str
    secrets: tuple[Annotated[Secret, signing_secret], ...] = ()
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300, extra={"unit": "seconds"})] = 10.0
    retry_schedule: Annotated[
        tuple[
            Annotated[float, msgspec.Meta(ge=0, le=_MAX_RETRY_DELAY, extra={"unit": "seconds"})],
            ...,
        ],
        msgspec.Meta(max_length=20, extra={"items": "retries"}),
    ] = STANDARD_WEBHOOKS_SCHEDULE
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    # Consecutive failed attempts that pause the subscriber (0: never), and for how long before
    # one delivery probes whether it is back.
    circuit_breaker_failures: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 20
    circuit_breaker_seconds: Annotated[
        float, msgspec.Meta(gt=0, le=_MAX_RETRY_DELAY, extra={"unit": "seconds"})
    ] = 60.0
    ordering: Ordering = "none"

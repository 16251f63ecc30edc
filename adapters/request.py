"""The request an adapter authenticates: bytes and strings, no I/O object."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

__all__ = ["InboundRequest"]


class InboundRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's POST as received: the raw body, never re-serialized, and its metadata.

    `headers` has lower-case names (HTTP names are case-insensitive; the ingress folds them).
    `client` is the address the request came from after the trusted-proxy rules, or None when
    there is no network peer (the CLI).
    """

    body: bytes
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)
    query: Mapping[str, str] = msgspec.field(default_factory=dict)
    client: str | None = None

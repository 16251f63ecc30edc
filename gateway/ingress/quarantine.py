"""What is kept with a payload that failed to normalize (quarantined, docs/reference/ingress.md):
its headers, minus every one that proves identity."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.base import Adapter
from adapters.source import SourceSettings

__all__ = ["quarantinable_headers"]

# Never kept with a quarantined payload: they prove identity, and reprocessing needs no proof
# (the request was authenticated when it arrived).
_SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie")


def quarantinable_headers(
    headers: Mapping[str, str], settings: SourceSettings, adapter: Adapter
) -> dict[str, str]:
    """The headers kept with a quarantined body: what an adapter may read again, minus anything
    that proves identity (credentials and signatures, the source's own signature header
    included)."""
    # The adapter's own signature headers (a described provider's `header`, whatever it is
    # called), the source's configured one (Finexer's is a setting), and any header whose name
    # says "signature".
    signatures = {*adapter.signature_headers, settings.signature_header.lower()}
    return {
        name: value
        for name, value in headers.items()
        if name not in _SECRET_HEADERS and name not in signatures and "signature" not in name
    }

"""`kind = "http"` (the default): Standard Webhooks POSTs (gateway/delivery/http.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar

import msgspec

from adapters.source import Secret
from gateway.delivery.settings import SubscriberConfig, host_url, signing_secret

__all__ = ["HttpSubscriber"]


def http_url(url: str) -> str:
    host_url(url, ("http", "https"))
    return url


class HttpSubscriber(SubscriberConfig, frozen=True, kw_only=True, tag="http"):
    """Standard Webhooks POSTs to `url`."""

    kind: ClassVar[str] = "http"
    required_hints: ClassVar[Mapping[str, str]] = {
        "url": ' (kind = "http" is the default)',
        "secrets": ": whsec_<base64>, so it can verify what it receives",
    }
    url: Annotated[str, http_url]
    # docs/reference/delivery.md: an HTTP subscriber verifies what it receives, so it has a secret;
    # a queue's consumers may not verify, so for the other kinds it is optional.
    secrets: Annotated[
        tuple[Annotated[Secret, signing_secret], ...],
        msgspec.Meta(
            min_length=1,
            extra={"empty": "must not be an empty array: an http subscriber needs a secret"},
        ),
    ]

"""What many tests share: a fixed clock, test secrets and source settings per adapter."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from adapters.base import Adapter
from adapters.registry import ADAPTERS
from adapters.request import InboundRequest
from adapters.source import Secret, SourceSettings

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Test-only secrets: the FinFusion one has Stripe's `whsec_` form, as theirs does.
SECRET = "whsec_test_5ZKpTHxVXvSkkdrPAbK8oeLjYr9qc3Rz"
OTHER_SECRET = "whsec_test_other_QWERTYUIOPASDFGHJKL"
TOKEN = "test-token-7f3a9c"
# A gateway config's start for tests that add subscribers and routes: loopback on a free port,
# SQLite under the test's directory, one token-authenticated source (finchpay).
FINCHPAY_GATEWAY = f"""
[server]
host = "127.0.0.1"
port = 0

[store]
url = "sqlite:///./data/gateway.db"

[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"
"""
SIGNED_ADAPTERS = tuple(name for name, adapter in ADAPTERS.items() if adapter.signed)
UNSIGNED_ADAPTERS = tuple(name for name, adapter in ADAPTERS.items() if not adapter.signed)


def settings_for(adapter: str, **overrides: Any) -> SourceSettings:
    """Source settings for `adapter`: signed ones get SECRET, unsigned ones TOKEN."""
    fields: dict[str, Any] = {"name": f"{adapter}-test", "adapter": adapter}
    if ADAPTERS[adapter].signed:
        fields["secrets"] = (Secret(SECRET),)
    else:
        fields["tokens"] = (Secret(TOKEN),)
    if "allow_ips" in overrides:
        overrides["allow_ips"] = tuple(ip_network(cidr) for cidr in overrides["allow_ips"])
    for key in ("secrets", "tokens"):
        if key in overrides:
            overrides[key] = tuple(Secret(value) for value in overrides[key])
    fields.update(overrides)
    return SourceSettings(**fields)


def signed_request(
    adapter: Adapter, body: bytes, secret: str = SECRET, now: datetime = NOW, **extra: Any
) -> InboundRequest:
    """A request as the provider would send it: signed for signed adapters, with the token in the
    query for the others."""
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    if adapter.sign is not None:
        headers.update(adapter.sign(body, secret, now))
    else:
        query["token"] = TOKEN
    headers.update(extra.pop("headers", {}))
    query.update(extra.pop("query", {}))
    return InboundRequest(body=body, headers=headers, query=query, **extra)

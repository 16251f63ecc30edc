"""Address allow-lists and shared tokens: how the providers that do not sign are authenticated.

FinchPay and the account-lifecycle provider send no signature, so a source proves the request
is theirs with a token only they know (in the URL or a bearer header) and/or the addresses they
post from. Any source may set `allow_ips`; that check runs before every other.
"""

from __future__ import annotations

import hmac
from ipaddress import IPv6Address, ip_address

from adapters.errors import ForbiddenAddress, InvalidToken
from adapters.request import InboundRequest
from adapters.source import SourceSettings
from schemas.event import Verification

__all__ = ["check_address", "check_token", "verify_unsigned"]

_BEARER = "bearer "


def check_address(request: InboundRequest, settings: SourceSettings) -> None:
    """Refuse a client outside the source's `allow_ips` (when it has any)."""
    if not settings.allow_ips:
        return
    if request.client is None:
        raise ForbiddenAddress("the client address is unknown and the source has an allow-list")
    try:
        address = ip_address(request.client)
    except ValueError:
        raise ForbiddenAddress("the client address is not an IP address") from None
    # An IPv4 client seen through a dual-stack socket arrives as ::ffff:a.b.c.d.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not any(address in network for network in settings.allow_ips):
        raise ForbiddenAddress("the client address is not in the source's allow_ips")


def presented_token(request: InboundRequest, settings: SourceSettings) -> str | None:
    """The token the request carries: the query parameter first, else `Authorization: Bearer`."""
    token = request.query.get(settings.token_param)
    if token:
        return token
    authorization = request.headers.get("authorization", "")
    if authorization[: len(_BEARER)].lower() == _BEARER:
        return authorization[len(_BEARER) :].strip() or None
    return None


def check_token(request: InboundRequest, settings: SourceSettings) -> None:
    """The request must carry one of the source's tokens (compared in constant time)."""
    token = presented_token(request, settings)
    if token is None:
        raise InvalidToken("no token in the request")
    given = token.encode()
    matched = False
    for expected in settings.tokens:
        matched |= hmac.compare_digest(given, expected.reveal().encode())
    if not matched:
        raise InvalidToken("the token does not match")


def verify_unsigned(request: InboundRequest, settings: SourceSettings) -> Verification:
    """Authenticate a request from a provider that does not sign (after `check_address`)."""
    if settings.tokens:
        check_token(request, settings)
        return "token"
    if settings.allow_ips:
        return "allowlist"
    if settings.allow_unauthenticated:
        return "none"
    # The config check refuses such a source; this guards a hand-built SourceSettings.
    raise InvalidToken("the source has neither a token nor an allow-list")

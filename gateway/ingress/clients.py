"""Who sent a webhook request: the TCP peer, or, behind trusted proxies, the address they
vouch for in X-Forwarded-For (`server.trusted_proxies`)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address

__all__ = ["client_address"]


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...],
) -> str | None:
    """The client's address: the TCP peer, unless the peer is a trusted proxy; then the nearest
    address in X-Forwarded-For that is not itself a trusted proxy (right to left, since each
    proxy appends the address it saw and only the trusted ones' additions can be believed)."""
    if peer is None or not trusted_proxies or not forwarded_for:
        return peer
    candidate = peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    while _is_trusted(candidate, trusted_proxies) and hops:
        candidate = hops.pop()
    return candidate


def _is_trusted(address: str, proxies: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in proxies)

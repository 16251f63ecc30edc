"""A source's settings as an adapter sees them: one provider account, from `[sources.<name>]`.

The gateway's config loader builds these; adapters only read them.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import msgspec

__all__ = ["Secret", "SourceSettings"]


class Secret:
    """A secret string that does not print itself.

    Settings end up in tracebacks, debug logs and reprs; wrapping each secret keeps it out of all
    of them. Read it with `reveal()` at the one place it is needed: the HMAC or the compare.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SourceSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything an adapter may consult about the source a request was posted to."""

    name: str
    adapter: str
    # Several secrets during a rotation: any one of them verifies.
    secrets: tuple[Secret, ...] = ()
    tolerance_seconds: int = 300
    # Stands in for the currency a provider leaves out (account-lifecycle never sends one).
    currency: str | None = None
    # Finexer's signature header name; other adapters ignore it.
    signature_header: str = "fx-signature"
    tokens: tuple[Secret, ...] = ()
    token_param: str = "token"  # noqa: S105 - a parameter name, not a token
    allow_ips: tuple[IPv4Network | IPv6Network, ...] = ()
    allow_unauthenticated: bool = False
    uri: str | None = None
    # The URL as the provider calls it (behind proxies it is not the one we see): schemes that
    # sign the URL (a described provider's `{url}`, Square's) sign this text.
    public_url: str | None = None
    # A PEM public key, for providers that sign with a private key (`scheme = "public_key"`).
    public_key: str | None = None

    @property
    def source_uri(self) -> str:
        """The CloudEvents `source` attribute of this source's events."""
        return self.uri or f"/sources/{self.name}"

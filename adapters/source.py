"""A source's settings as an adapter sees them: one provider account, from `[sources.<name>]`.

The gateway's config loader (gateway/config/) reads the file into these; adapters only read
them. Types are the schema: each key's type and bounds are its annotation, and what a type
cannot say (a currency is ISO 4217, a header name is a token) is a check in the annotation, a
function that returns the value or raises ValueError with the sentence check-config prints
(`{value}` stands for the value, quoted, or named by its variable when it came from one).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated
from urllib.parse import SplitResult, urlsplit

import msgspec

from schemas.money import CURRENCY_EXPONENTS, MoneyError, normalize_currency_code

__all__ = ["Network", "Secret", "SourceSettings", "network", "split_url"]

# RFC 9110 token: what a header field name is made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# RFC 3986 unreserved characters: a parameter name that never needs encoding.
_QUERY_PARAMETER = re.compile(r"[A-Za-z0-9._~-]{1,64}")
# RFC 3986 URI-reference: reserved and unreserved characters, and %-escapes.
_URI_REFERENCE = re.compile(r"(?:[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+")
# Three letters is the shape of an ISO 4217 code, so a three-letter code outside the table is
# far likelier a typo ("XYZ", "GPB") than an asset; these crypto tickers are the exceptions.
# Longer or shorter tickers (USDT, USDC) are kept as given, as the money module keeps them.
_THREE_LETTER_TICKERS = frozenset(
    {"ADA", "BNB", "BTC", "DAI", "DOT", "ETH", "LTC", "SOL", "TRX", "XLM", "XRP"}
)


def split_url(url: str) -> SplitResult:
    """`url`'s parts, or ValueError saying what is wrong, never quoting it (a URL may carry
    credentials or a token)."""
    if any(character.isspace() or ord(character) < 32 for character in url):
        raise ValueError("not a URL: it contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises on a bad one
    except ValueError as error:
        # urllib's messages may quote the URL; say what kind of problem it is and no more.
        text = str(error).lower()
        if "port" in text:
            raise ValueError("not a URL: the port is not a number from 0 to 65535") from None
        if "ipv6" in text:
            raise ValueError("not a URL: a malformed IPv6 address") from None
        raise ValueError("not a URL: it cannot be parsed") from None
    return parts


def network(text: str) -> IPv4Network | IPv6Network:
    """A CIDR; a bare address means that one address (/32 or /128)."""
    try:
        return ip_network(text)
    except ValueError:
        pass
    try:
        loose = ip_network(text, strict=False)
    except ValueError:
        raise ValueError("not an IP address or CIDR: {value}") from None
    raise ValueError(f"{{value}} has host bits set (did you mean {loose}?)")


Network = Annotated[IPv4Network | IPv6Network, network]


def _currency(text: str) -> str:
    try:
        code = normalize_currency_code(text)
    except MoneyError:
        raise ValueError('not a currency code: {value} (e.g. "GBP")') from None
    if len(code) == 3 and code not in CURRENCY_EXPONENTS and code not in _THREE_LETTER_TICKERS:
        raise ValueError(f"not an ISO 4217 currency code: {{value}}{_closest_currency(code)}")
    return code


def _closest_currency(code: str) -> str:
    """Codes two neighbouring letters apart (GPB), else one letter apart (EUA): typos."""
    codes = [other for other in sorted(CURRENCY_EXPONENTS) if len(other) == len(code)]
    swaps = {code[:i] + code[i + 1] + code[i] + code[i + 2 :] for i in range(len(code) - 1)}
    swapped = [other for other in codes if other in swaps]
    one_off = [
        other for other in codes if sum(a != b for a, b in zip(other, code, strict=True)) == 1
    ]
    closest = (swapped or one_off)[:3]
    if not closest:
        return ""
    return " (did you mean " + " or ".join(f'"{other}"' for other in closest) + "?)"


def _header_name(text: str) -> str:
    if not _HEADER_NAME.fullmatch(text):
        raise ValueError("not an HTTP header name (RFC 9110 token characters only)")
    return text.lower()


def _query_parameter(text: str) -> str:
    if not _QUERY_PARAMETER.fullmatch(text):
        raise ValueError("not a query parameter name: 1 to 64 of A-Za-z0-9._~-")
    return text


def _uri_reference(text: str) -> str:
    if not _URI_REFERENCE.fullmatch(text):
        raise ValueError(
            "not a URI reference (RFC 3986): spaces and other characters need %-encoding"
        )
    return text


def _public_url(text: str) -> str:
    """An absolute http(s) URL. Never quoted in a message: it may carry a token."""
    parts = split_url(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "expected an absolute http:// or https:// URL: the URL as the provider calls it"
        )
    return text


def _public_key(text: str) -> str:
    """A PEM public key (SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`) that loads."""
    # Imported here: only a source with a public key needs it.
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(text.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(
            "not a PEM public key: expected -----BEGIN PUBLIC KEY----- (base64)"
            " -----END PUBLIC KEY-----"
        ) from None
    return text


_NonEmpty = msgspec.Meta(min_length=1)
_Secrets = Annotated[tuple["Secret", ...], msgspec.Meta(min_length=1)]


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
    secrets: _Secrets = ()
    tolerance_seconds: Annotated[int, msgspec.Meta(ge=1)] = 300
    # Stands in for the currency a provider leaves out (account-lifecycle never sends one).
    currency: Annotated[str, _NonEmpty, _currency] | None = None
    # Finexer's signature header name; other adapters ignore it.
    signature_header: Annotated[str, _NonEmpty, _header_name] = "fx-signature"
    tokens: _Secrets = ()
    token_param: Annotated[str, _NonEmpty, _query_parameter] = "token"  # noqa: S105 - a name
    allow_ips: tuple[Network, ...] = ()
    allow_unauthenticated: bool = False
    uri: Annotated[str, _NonEmpty, _uri_reference] | None = None
    # The URL as the provider calls it (behind proxies it is not the one we see): schemes that
    # sign the URL (a described provider's `{url}`, Square's) sign this text.
    public_url: Annotated[str, _NonEmpty, _public_url] | None = None
    # A PEM public key, for providers that sign with a private key (`scheme = "public_key"`).
    public_key: Annotated[str, _NonEmpty, _public_key] | None = None

    @property
    def source_uri(self) -> str:
        """The CloudEvents `source` attribute of this source's events."""
        return self.uri or f"/sources/{self.name}"

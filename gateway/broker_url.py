"""Broker URLs carry credentials (`amqp://user:password@host/`, `redis://:password@host/0`,
`nats://token@host`): wherever one is shown (a log line, an error, a repr, a metric label), the
password is masked, so a config dump or a traceback never leaks it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from gateway.secret_url import MASK, SecretUrl

__all__ = ["BrokerUrl", "masked_url"]


def masked_url(url: str) -> str:
    """`url` with its password (or, with no password, its user: NATS takes a bare token there)
    replaced by MASK; the scheme, host, port and path stay readable. A URL that cannot even be
    parsed is masked whole rather than risk quoting it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK
    if parts.username is None and parts.password is None:
        return url
    user = MASK if parts.password is None else f"{parts.username}:{MASK}"
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal loses its brackets in urlsplit
        host = f"[{host}]"
    location = f"{user}@{host}" + ("" if port is None else f":{port}")
    return urlunsplit((parts.scheme, location, parts.path, parts.query, parts.fragment))


class BrokerUrl(SecretUrl):
    """A broker URL that shows itself masked (`masked_url`)."""

    __slots__ = ()

    @property
    def masked(self) -> str:
        return masked_url(self._value)

    def _shown(self) -> str:
        return self.masked

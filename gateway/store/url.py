"""The store's URL (`[store] url`), which for PostgreSQL may carry a password: wherever it is
shown (a log line, an error, `check-config`, /readyz, a repr of the config) it shows itself
redacted, and `reveal()` is for the one place that connects (`open_store`).

A libpq URL holds secrets in two places: the password of its user information
(`postgresql://user:password@host/db`) and the `password` and `sslpassword` query parameters.
Both are replaced by MASK in the display form. libpq reads the URL itself (the store hands it over
as it is), so nothing here interprets it further than finding those two places, and
`check_store_url` (what a store URL may be, as `[store] url`'s check) asks libpq what it would
refuse.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from gateway.secret_url import MASK, SecretUrl

__all__ = [
    "MASK",
    "POSTGRESQL_SCHEMES",
    "SQLITE_PREFIX",
    "StoreUrl",
    "check_store_url",
    "redacted_store_url",
]
SQLITE_PREFIX = "sqlite:///"
POSTGRESQL_SCHEMES = ("postgresql", "postgres")
# libpq's query parameters whose value is a secret: the password, and the one of the client key.
_SECRET_PARAMETERS = ("password", "sslpassword")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def _split(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, user information, the rest of the authority and path, query) of a URL with an
    authority, or None. The user information ends at the authority's last `@`: libpq stops at
    the first, so a password with a bare `@` is masked whole either way."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return None
    end = min(
        (index for index in (rest.find("/"), rest.find("?")) if index >= 0), default=len(rest)
    )
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    path, _, query = tail.partition("?")
    return scheme, userinfo if at else "", (host if at else authority) + path, query


def _secret_values(url: str) -> list[str]:
    """Every secret of `url` as written and as libpq decodes it, longest first."""
    parts = _split(url)
    if parts is None:
        return []
    _, userinfo, _, query = parts
    found: list[str] = []
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    for parameter in query.split("&") if query else ():
        key, _, value = parameter.partition("=")
        if unquote(key) in _SECRET_PARAMETERS:
            found.append(value)
    values = {form for value in found for form in (value, unquote(value)) if form}
    return sorted(values, key=len, reverse=True)


def redacted_store_url(url: str) -> str:
    """`url` with its password and secret query parameters replaced by MASK; the scheme, user,
    hosts, database and other parameters stay readable. A URL without `://` (a malformed one)
    is masked whole rather than risk quoting it; `sqlite:///path` is shown as it is."""
    if url.startswith(SQLITE_PREFIX):
        return url
    parts = _split(url)
    if parts is None:
        return MASK
    scheme, userinfo, location, query = parts
    user, colon, _ = userinfo.partition(":")
    credentials = f"{user}:{MASK}@" if colon else f"{userinfo}@" if userinfo else ""
    parameters = []
    for parameter in query.split("&") if query else ():
        key, equals, _ = parameter.partition("=")
        parameters.append(
            f"{key}={MASK}" if equals and unquote(key) in _SECRET_PARAMETERS else parameter
        )
    shown_query = "?" + "&".join(parameters) if query else ""
    return f"{scheme}://{credentials}{location}{shown_query}"


class StoreUrl(SecretUrl):
    """A store URL that shows itself redacted (`redacted_store_url`); `reveal()` is for
    `open_store` alone."""

    __slots__ = ()

    @property
    def redacted(self) -> str:
        return redacted_store_url(self._value)

    @property
    def scheme(self) -> str:
        return self._value.partition(":")[0].lower()

    @property
    def shared(self) -> bool:
        """A database server that several nodes share (PostgreSQL), rather than a file of this
        host (SQLite): at start it may be down, or being migrated by another node, and both
        pass by themselves, so a node waits for it instead of refusing to start."""
        return self.scheme in POSTGRESQL_SCHEMES

    def scrub(self, text: str) -> str:
        """`text` (an error's message, say) with this URL's secrets replaced by MASK wherever
        they appear, raw or percent-decoded: the drivers' messages are not ours to trust."""
        text = text.replace(self._value, self.redacted)
        for secret in _secret_values(self._value):
            text = text.replace(secret, MASK)
        return text

    def _shown(self) -> str:
        return self.redacted


def check_store_url(store_url: StoreUrl) -> StoreUrl:
    """`store_url` if it is SQLite or PostgreSQL in a form that opens, else ValueError saying
    what is wrong (check-config's sentence). The URL is never quoted: it may carry a password."""
    url = store_url.reveal()
    if url.startswith(SQLITE_PREFIX):
        database = url.removeprefix(SQLITE_PREFIX)
        if not database:
            raise ValueError("the database path is missing: sqlite:///<path>")
        if "?" in database:
            raise ValueError("query parameters are not supported: sqlite:///<path>")
        if database == ":memory:":
            raise ValueError(
                "an in-memory database loses every event when the process stops;"
                " give a file path: sqlite:///<path>"
            )
        return store_url
    if url.startswith(tuple(f"{scheme}://" for scheme in POSTGRESQL_SCHEMES)):
        _check_postgresql_url(url)
        return store_url
    scheme = url.partition(":")[0].lower() if _URL_SCHEME.match(url) else ""
    if scheme == "sqlite":
        raise ValueError("expected sqlite:///<path> (three slashes, then the path)")
    if scheme in POSTGRESQL_SCHEMES:
        raise ValueError("expected postgresql://... or postgres://... (in lower case, then //)")
    if scheme:
        raise ValueError(
            f"the {scheme} store is not supported; use sqlite:///<path> or postgresql://..."
        )
    raise ValueError("expected a store URL: sqlite:///<path> or postgresql://...")


def _check_postgresql_url(url: str) -> None:
    """What libpq would refuse in `url` before connecting. libpq itself reads it (psycopg's
    `conninfo_to_dict` is its PQconninfoParse): this only adds what a gateway needs, a host
    (or a socket directory) to reach and ports that are ports."""
    if any(character.isspace() or ord(character) < 32 for character in url):
        raise ValueError(
            "not a URL: it contains whitespace or control characters (percent-encode them)"
        )
    # Imported here: only a PostgreSQL URL needs libpq.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parameters = conninfo_to_dict(url)
    except psycopg.Error as error:
        reason = _libpq_reason(str(error)) if '"' not in url else None
        shown = StoreUrl(url).scrub(f": {reason}") if reason else ""
        raise ValueError(f"libpq cannot read the URL{shown}") from None
    hosts = [str(parameters.get(key) or "") for key in ("host", "hostaddr")]
    if not any(host.strip(",") for host in hosts):
        raise ValueError(
            "the URL names no host: postgresql://<user>:<password>@<host>:<port>/<database>,"
            " or a socket directory as ?host=/run/postgresql"
        )
    for port in str(parameters.get("port") or "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError("a port is not a number from 1 to 65535")


def _libpq_reason(message: str) -> str | None:
    """libpq's complaint without what it quotes of the URL (`"pw%zz"`: a piece of it may be the
    password); a one-character quote names a separator (`"="`) and stays. None when its quotes
    do not pair up (nothing of it is then safe to show)."""
    lines = message.strip().splitlines()
    if not lines or lines[0].count('"') % 2:
        return None
    reason = re.sub(
        r'"([^"]*)"', lambda quote: quote[0] if len(quote[1]) <= 1 else "(...)", lines[0]
    )
    return reason.rstrip(": ") or None

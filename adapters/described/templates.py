"""The two texts of a signature description: how its header reads, and what bytes are signed.

`format` (docs/reference/providers.md) is the signature header's text with `{signature}` and
optionally `{timestamp}`. When it is `key=value` pairs separated by `,` or `;` (Stripe's
`t={timestamp},v1={signature}`, or a single `v1={signature}`), the header is read as such pairs in
any order: a value runs from the first `=` to the separator (base64 may end in `=`), keys the format
does not name are ignored (Stripe's `v0`), and the signature key may repeat (a provider rotating its
secret sends two). Any other format is literal text around the placeholders.

`signed` is text in which `{body}` is the raw body, `{timestamp}` the timestamp exactly as sent,
`{url}` the source's public URL and `{header:NAME}` a request header; the rest is literal.

Both are parsed once, when the description is read; a mistake is a TemplateError for
check-config. Reading a header never quotes it back: errors say what is wrong with its form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.described.expressions import HEADER_NAME, json_quote
from adapters.errors import InvalidSignature

__all__ = ["HeaderFormat", "SignedTemplate", "TemplateError"]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PAIR_KEY = re.compile(r"[A-Za-z0-9_.-]+")


class TemplateError(ValueError):
    """A `format` or `signed` text that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class HeaderFormat:
    """How a signature header reads: pairs (keys for the signature and timestamp) or a pattern."""

    text: str
    has_timestamp: bool
    # Pairs: the separators the header is split on, and the keys that carry the values.
    separators: re.Pattern[str] | None = None
    signature_key: str = ""
    timestamp_key: str = ""
    # Literal: the format as a regular expression with named groups.
    pattern: re.Pattern[str] | None = None

    def read(self, value: str, header: str) -> tuple[str | None, list[str]]:
        """(the timestamp as sent, or None; every signature text) from the header's value."""
        if self.separators is not None:
            return self._read_pairs(value, header)
        assert self.pattern is not None  # one of the two is set by parse()
        match = self.pattern.fullmatch(value.strip())
        if match is None:
            raise InvalidSignature(f"malformed {header} header: it does not read as {self.text}")
        timestamp = match.group("timestamp") if self.has_timestamp else None
        return timestamp, [match.group("signature")]

    def _read_pairs(self, value: str, header: str) -> tuple[str | None, list[str]]:
        assert self.separators is not None
        timestamp: str | None = None
        signatures: list[str] = []
        for item in self.separators.split(value):
            key, equals, text = item.partition("=")
            key = key.strip()
            # Parts that are no pair at all are ignored, as unknown keys are (Stripe's library
            # does the same), so that a provider adding a field breaks nothing.
            if not equals:
                continue
            if key == self.signature_key:
                signatures.append(text.strip())
            elif self.has_timestamp and key == self.timestamp_key and timestamp is None:
                timestamp = text.strip()
        if self.has_timestamp and not timestamp:
            raise InvalidSignature(f"malformed {header} header: no {self.timestamp_key}=")
        if not signatures:
            raise InvalidSignature(f"malformed {header} header: no {self.signature_key}=")
        return timestamp, signatures

    def write(self, signature: str, timestamp: str | None) -> str:
        """The header's value for one signature (what the provider sends; for the signer)."""
        return self.text.replace("{signature}", signature).replace("{timestamp}", timestamp or "")

    @classmethod
    def parse(cls, text: str) -> HeaderFormat:
        names = _placeholders(text, "format", ("signature", "timestamp"))
        if names.count("signature") != 1:
            raise TemplateError("must contain {signature} exactly once")
        if names.count("timestamp") > 1:
            raise TemplateError("may contain {timestamp} at most once")
        has_timestamp = "timestamp" in names
        pairs = _pairs(text)
        if pairs is not None:
            separator, items = pairs
            keys = [key for key, _ in items]
            if len(set(keys)) != len(keys):
                raise TemplateError("names the same key twice")
            signature_key = next(key for key, value in items if value == "{signature}")
            timestamp_key = next((key for key, value in items if value == "{timestamp}"), "")
            # A single pair says nothing about the separator: repeated ones may use either.
            split = re.compile(f"[{re.escape(separator or ',;')}]")
            return cls(text, has_timestamp, split, signature_key, timestamp_key)
        pattern = ""
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            pattern += re.escape(text[position : match.start()])
            pattern += (
                "(?P<signature>.+)" if match.group(1) == "signature" else "(?P<timestamp>.+?)"
            )
            position = match.end()
        pattern += re.escape(text[position:])
        return cls(text, has_timestamp, pattern=re.compile(pattern, re.DOTALL))


def _pairs(text: str) -> tuple[str, list[tuple[str, str]]] | None:
    """(separator, [(key, value)]) when `text` is key=value pairs whose placeholders are whole
    values; None when it is literal text. The separator is "" for a single pair."""
    separators = {character for character in ",;" if character in text}
    if len(separators) > 1:
        return None
    separator = separators.pop() if separators else ""
    items: list[tuple[str, str]] = []
    for item in text.split(separator) if separator else [text]:
        key, equals, value = item.strip().partition("=")
        if not equals or not _PAIR_KEY.fullmatch(key):
            return None
        if "{" in value and value not in ("{signature}", "{timestamp}"):
            return None
        items.append((key, value))
    return separator, items


@dataclass(frozen=True, slots=True)
class SignedTemplate:
    """The signed bytes as parts: literal bytes, or a placeholder's name."""

    text: str
    parts: tuple[bytes | str, ...]

    @property
    def has_body(self) -> bool:
        return "body" in self.parts

    @property
    def has_timestamp(self) -> bool:
        return "timestamp" in self.parts

    @property
    def has_url(self) -> bool:
        return "url" in self.parts

    @property
    def header_names(self) -> tuple[str, ...]:
        return tuple(
            part.removeprefix("header:")
            for part in self.parts
            if isinstance(part, str) and part.startswith("header:")
        )

    def render(
        self, body: bytes, timestamp: str | None, url: str | None, headers: Mapping[str, str]
    ) -> bytes:
        """The signed bytes of a request. A header that is missing is a malformed request."""
        if len(self.parts) == 1 and self.parts[0] == "body":
            return body  # the common case, without a copy
        pieces: list[bytes] = []
        for part in self.parts:
            if isinstance(part, bytes):
                pieces.append(part)
            elif part == "body":
                pieces.append(body)
            elif part == "timestamp":
                pieces.append(header_bytes(timestamp or ""))
            elif part == "url":
                if url is None:
                    raise InvalidSignature("the source has no public_url, which the scheme signs")
                pieces.append(url.encode())
            else:
                name = part.removeprefix("header:")
                value = headers.get(name)
                if value is None:
                    raise InvalidSignature(f"missing {name} header")
                pieces.append(header_bytes(value))
        return b"".join(pieces)

    @classmethod
    def parse(cls, text: str) -> SignedTemplate:
        _placeholders(text, "signed", ("body", "timestamp", "url", "header:NAME"))
        parts: list[bytes | str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            if match.start() > position:
                parts.append(text[position : match.start()].encode())
            name = match.group(1)
            if name.startswith("header:"):
                name = "header:" + name.removeprefix("header:").lower()
            parts.append(name)
            position = match.end()
        if position < len(text):
            parts.append(text[position:].encode())
        return cls(text, tuple(parts))


def header_bytes(value: str) -> bytes:
    """A header's bytes as sent. The ingress decodes headers as Latin-1 (what HTTP servers hand
    over), so encoding back as Latin-1 gives the provider's bytes, UTF-8 included."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


def _placeholders(text: str, what: str, known: tuple[str, ...]) -> list[str]:
    """The placeholder names in `text`, refusing unknown ones and stray braces."""
    names = []
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1)
        if name.startswith("header:") and "header:NAME" in known:
            header = name.removeprefix("header:")
            if not HEADER_NAME.fullmatch(header):
                raise TemplateError(
                    f"{{{name}}}: {json_quote(header)} is not an HTTP header name"
                    " (RFC 9110 token characters only)"
                )
            names.append("header")
            continue
        if name not in known:
            listed = ", ".join(f"{{{other}}}" for other in known)
            raise TemplateError(f"unknown placeholder {{{name}}} ({what} knows {listed})")
        names.append(name)
    if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
        raise TemplateError("a brace that opens or closes no placeholder")
    return names

"""`{type}` and `{source}` in a NATS subject or an AMQP routing key (docs/reference/queues.md).

What they are replaced by is sanitized part by part (the parts a `.` separates): every character
outside A-Za-z0-9_- becomes `_`, and an empty part becomes `_`. So `finrelay.{type}` gives
`finrelay.payment.succeeded`, and an event type can never turn into a wildcard (`*`, `>`, `#`)
or an empty token the broker would refuse. A template is checked once, when the config is read
(`template_problem`); rendering is then a pair of string replacements per message.
"""

from __future__ import annotations

import re

__all__ = ["PLACEHOLDERS", "render_template", "sanitize", "template_problem"]

PLACEHOLDERS = ("{type}", "{source}")

# Explicit ASCII ranges: `\w` would let any Unicode letter through.
_OUTSIDE_TOKEN = re.compile(r"[^A-Za-z0-9_-]")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def sanitize(value: str) -> str:
    """`value` with every dot-separated part made of A-Za-z0-9_- only, and never empty."""
    return ".".join(_OUTSIDE_TOKEN.sub("_", part) or "_" for part in value.split("."))


def render_template(template: str, event_type: str, source: str) -> str:
    if "{" not in template:
        return template
    return template.replace("{type}", sanitize(event_type)).replace("{source}", sanitize(source))


def template_problem(template: str, wildcards: str, *, empty_parts: bool) -> str | None:
    """What is wrong with a template, or None. `wildcards` are the broker's (NATS `*>`, AMQP
    `*#`), which a published subject or routing key must not contain; `empty_parts` says whether
    the broker accepts an empty dot-separated token (AMQP does, NATS does not)."""
    for placeholder in _PLACEHOLDER.findall(template):
        if placeholder not in PLACEHOLDERS:
            return f"unknown placeholder {placeholder} (known: {', '.join(PLACEHOLDERS)})"
    # What remains when every placeholder gives a plain token is the template's own text.
    literal = _PLACEHOLDER.sub("x", template)
    if "{" in literal or "}" in literal:
        return "an unmatched { or } (placeholders are {type} and {source})"
    if any(character.isspace() or ord(character) < 32 for character in literal):
        return "must not contain whitespace or control characters"
    found = sorted({character for character in literal if character in wildcards})
    if found:
        return f"must not contain the wildcard {' or '.join(found)}: publishing needs one subject"
    if not empty_parts and "" in literal.split("."):
        return "an empty part: no leading, trailing or double dot"
    return None

"""The operator page's Jinja2 templates (gateway/admin/templates/), with the filters they use."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
from starlette.templating import Jinja2Templates

__all__ = ["pretty_json", "templates"]

_HERE = Path(__file__).parent

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
)


def pretty_json(raw: bytes) -> str:
    return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)


def _when(rfc3339: str | None) -> str:
    """`2026-11-29T20:48:50.123456Z` as `2026-11-29 20:48:50` (UTC, whole seconds)."""
    if rfc3339 is None:
        return "\N{EN DASH}"
    return rfc3339.replace("T", " ")[:19]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "\N{EN DASH}"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


templates.env.filters["when"] = _when
templates.env.filters["age"] = _age

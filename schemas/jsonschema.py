"""The JSON Schema of the canonical event, generated from the Structs, never written by hand."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec

from schemas.event import CanonicalEvent

__all__ = ["SCHEMA_PATH", "canonical_event_schema", "render_schema"]

SCHEMA_PATH = Path(__file__).with_name("canonical-event.schema.json")
SCHEMA_ID = "https://finrelay.dev/schemas/canonical-event.schema.json"


def canonical_event_schema() -> dict[str, Any]:
    """The schema as a dict, with the draft and a title added to what msgspec derives."""
    derived = _clean_descriptions(msgspec.json.schema(CanonicalEvent))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "finrelay canonical event (CloudEvents 1.0, structured JSON)",
        **derived,
    }


def _clean_descriptions(node: Any) -> Any:
    """Descriptions as `inspect.cleandoc` gives them: msgspec copies docstrings as they are
    (0.19) or without their indentation (0.23), and the checked-in file must not depend on which
    version rendered it."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def render_schema() -> str:
    """The schema exactly as it is checked in: stable key order, two-space indent, final newline."""
    return json.dumps(canonical_event_schema(), indent=2, sort_keys=True) + "\n"

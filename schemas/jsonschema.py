"""The JSON Schema of the canonical event, generated from the Structs, never written by hand."""

from __future__ import annotations

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
    derived = msgspec.json.schema(CanonicalEvent)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "finrelay canonical event (CloudEvents 1.0, structured JSON)",
        **derived,
    }


def render_schema() -> str:
    """The schema exactly as it is checked in: stable key order, two-space indent, final newline."""
    return json.dumps(canonical_event_schema(), indent=2, sort_keys=True) + "\n"

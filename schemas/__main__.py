"""`python -m schemas`: regenerate the checked-in JSON Schema from the Structs."""

from schemas.jsonschema import SCHEMA_PATH, render_schema

SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
print(f"wrote {SCHEMA_PATH}")

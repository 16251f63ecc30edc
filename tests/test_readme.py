"""The provider table of docs/reference/types.md is the adapters' own tables and the status rule,
so it cannot drift from the code."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from adapters import account_lifecycle, finaegis, finchpay, finexer, finfusion
from adapters.registry import ADAPTERS
from schemas.taxonomy import canonical_status

TYPES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "types.md"
# The table each built-in adapter maps its provider types with (the lifecycle provider's by
# identifier; its codes are checked on their own below).
TYPE_TABLES: dict[str, Mapping[str, str]] = {
    "finaegis": finaegis.TYPE_TABLE,
    "finexer": finexer.TYPE_TABLE,
    "finfusion": finfusion.TYPE_TABLE,
    "finchpay": finchpay.TYPE_TABLE,
    "account_lifecycle": account_lifecycle.IDENTIFIER_TABLE,
}


def table_lines() -> list[list[str]]:
    text = TYPES_PAGE.read_text()
    table = text.split("<!-- provider-types:start -->")[1].split("<!-- provider-types:end -->")[0]
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in table.splitlines()
        if line.strip()
    ]


def documented_rows() -> set[tuple[str, str, str, str | None]]:
    """(adapter, provider type, canonical type, data.status) of each row naming one type."""
    rows = set()
    for cells in table_lines():
        if len(cells) != 4 or not cells[1].startswith("`"):
            continue
        provider_type = re.match(r"`([^`]+)`", cells[1])
        canonical = re.match(r"`([^`]+)`", cells[2])
        status = re.fullmatch(r"`([^`]+)`|(null)", cells[3])
        if provider_type and canonical:
            assert status, f"the status cell of {cells} is neither `word` nor null"
            rows.add((cells[0], provider_type.group(1), canonical.group(1), status.group(1)))
    return rows


def test_every_builtin_adapter_has_its_type_table_here() -> None:
    # A new built-in fails here until its table is named above (and so checked on the page).
    assert set(TYPE_TABLES) == set(ADAPTERS)


def test_types_page_lists_every_provider_type_and_nothing_else() -> None:
    expected = {
        (adapter, provider_type, canonical, canonical_status(canonical))
        for adapter, table in TYPE_TABLES.items()
        for provider_type, canonical in table.items()
    }
    assert documented_rows() == expected


def test_types_page_lifecycle_codes_match_the_code_table() -> None:
    text = TYPES_PAGE.read_text()
    for code, canonical in account_lifecycle.CODE_TABLE.items():
        assert re.search(rf"\({code}\) \| `{re.escape(canonical)}`", text), code


def test_types_page_states_the_status_of_the_open_kinds() -> None:
    rows = {cells[1]: cells[2:] for cells in table_lines() if len(cells) == 4}
    assert rows["`workflow.*` (any action)"] == [
        "the same name",
        "the action (null for `step_completed`)",
    ]
    assert rows["`system.*` (any action)"] == ["the same name", "null"]
    assert canonical_status("workflow.started") == "started"
    assert canonical_status("workflow.step_completed") is None
    assert canonical_status("system.maintenance_start") is None

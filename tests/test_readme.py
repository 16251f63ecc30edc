"""The README's provider table is the adapters' own tables and the status rule, so it cannot drift
from the code."""

from __future__ import annotations

import re
from pathlib import Path

from adapters import account_lifecycle, finaegis, finchpay, finexer, finfusion
from schemas.taxonomy import canonical_status

README = Path(__file__).resolve().parents[1] / "README.md"


def table_lines() -> list[list[str]]:
    text = README.read_text()
    table = text.split("<!-- provider-types:start -->")[1].split("<!-- provider-types:end -->")[0]
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in table.splitlines()
        if line.strip()
    ]


def readme_rows() -> set[tuple[str, str, str, str | None]]:
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


def test_readme_lists_every_provider_type_and_nothing_else() -> None:
    expected = {
        (adapter, provider_type, canonical, canonical_status(canonical))
        for adapter, table in [
            ("finaegis", finaegis.TYPE_TABLE),
            ("finexer", finexer.TYPE_TABLE),
            ("finfusion", finfusion.TYPE_TABLE),
            ("finchpay", finchpay.TYPE_TABLE),
            ("account_lifecycle", account_lifecycle.IDENTIFIER_TABLE),
        ]
        for provider_type, canonical in table.items()
    }
    assert readme_rows() == expected


def test_readme_lifecycle_codes_match_the_code_table() -> None:
    text = README.read_text()
    for code, canonical in account_lifecycle.CODE_TABLE.items():
        assert re.search(rf"\({code}\) \| `{re.escape(canonical)}`", text), code


def test_readme_states_the_status_of_the_open_kinds() -> None:
    rows = {cells[1]: cells[2:] for cells in table_lines() if len(cells) == 4}
    assert rows["`workflow.*` (any action)"] == [
        "the same name",
        "the action (null for `step_completed`)",
    ]
    assert rows["`system.*` (any action)"] == ["the same name", "null"]
    assert canonical_status("workflow.started") == "started"
    assert canonical_status("workflow.step_completed") is None
    assert canonical_status("system.maintenance_start") is None

"""The README's provider table is the adapters' own tables, so it cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from adapters import account_lifecycle, finaegis, finchpay, finexer, finfusion

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_rows() -> set[tuple[str, str, str]]:
    text = README.read_text()
    table = text.split("<!-- provider-types:start -->")[1].split("<!-- provider-types:end -->")[0]
    rows = set()
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`"):
            continue
        provider_type = re.match(r"`([^`]+)`", cells[1])
        canonical = re.match(r"`([^`]+)`", cells[2])
        if provider_type and canonical:
            rows.add((cells[0], provider_type.group(1), canonical.group(1)))
    return rows


def test_readme_lists_every_provider_type_and_nothing_else() -> None:
    expected = {
        (adapter, provider_type, canonical)
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

"""Every page and section a shipped config's comment names exists: an operator following
`docs/reference/<page>.md: "<heading>"` (or `README: "<heading>"`) from a config file must land
somewhere (issue 25 found "README: Processes", a section that did not exist)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIGS = sorted((ROOT / "config").rglob("*.toml"))

# `README: "<heading>"`, the quoted heading possibly broken over two comment lines.
_REFERENCE = re.compile(r'README: "([^"]+)"')
# `docs/<page>.md`, optionally followed by `: "<heading>"`.
_DOCS_REFERENCE = re.compile(r'docs/([\w/.-]+\.md)(?:: "([^"]+)")?')


def readme_headings(path: Path = README) -> set[str]:
    """The text of each Markdown heading of `path`, code blocks left out (their `#` lines
    are shell and Python comments)."""
    headings = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6} (.+)", line)):
            headings.add(match.group(1).strip())
    return headings


def comment_text(path: Path) -> str:
    """The file's comments as one running text, so a reference wrapped at a line end reads
    whole."""
    comments = [
        line.split("#", 1)[1].strip() for line in path.read_text().splitlines() if "#" in line
    ]
    return " ".join(comments)


def test_headings_are_found() -> None:
    assert {"Five minutes with it", "Benchmarks"} <= readme_headings()
    assert "Running two nodes" in readme_headings(ROOT / "docs" / "reference" / "nodes.md")


def test_every_config_reference_names_a_readme_heading() -> None:
    assert CONFIGS, "no config files found"
    headings = readme_headings()
    for path in CONFIGS:
        text = comment_text(path)
        for mention in re.finditer(r"README", text):
            reference = _REFERENCE.match(text, mention.start())
            where = f"{path.relative_to(ROOT)}: ...{text[mention.start() : mention.start() + 40]}"
            assert reference, f'{where}: name the section, as README: "<heading>"'
            assert reference.group(1) in headings, f"{where}: no such README heading"


def test_every_config_reference_names_a_docs_page_and_heading() -> None:
    references = 0
    for path in CONFIGS:
        text = comment_text(path)
        for mention in _DOCS_REFERENCE.finditer(text):
            page, heading = ROOT / "docs" / mention.group(1), mention.group(2)
            where = f"{path.relative_to(ROOT)}: {mention.group(0)}"
            assert page.is_file(), f"{where}: no such page"
            assert heading is None or heading in readme_headings(page), f"{where}: no such heading"
            references += 1
        assert "CONTRACT.md" not in path.read_text(), (
            f"{path.relative_to(ROOT)}: name the docs page"
        )
    assert references >= 5

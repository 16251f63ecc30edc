"""Every README section a shipped config's comment names is a real heading of README.md: an
operator following `README: "..."` from a config file must land somewhere (issue 25 found
"README: Processes", a section that did not exist)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIGS = sorted((ROOT / "config").rglob("*.toml"))

# `README: "<heading>"`, the quoted heading possibly broken over two comment lines.
_REFERENCE = re.compile(r'README: "([^"]+)"')


def readme_headings() -> set[str]:
    """The text of each Markdown heading of the README, code blocks left out (their `#` lines
    are shell and Python comments)."""
    headings = set()
    in_code = False
    for line in README.read_text().splitlines():
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


def test_readme_headings_are_found() -> None:
    assert {"Delivery to queues", "Several nodes on PostgreSQL"} <= readme_headings()


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

"""Presets: real providers described as data, one `<name>.toml` beside this file.

A preset holds exactly what a `[providers.<name>]` table of the config file holds (`[signature]`,
`[event]`, `[types]`; docs/reference/providers.md), plus a `[preset]` table saying where it comes
from: `documentation`, the provider's page it was written from, and optional `notes` on what that
page left open. Each becomes the same kind of `Adapter` a built-in is (`described_adapter(...,
origin="preset")`), so the gateway cannot tell them apart.

The files are read with importlib.resources, so presets work from a wheel or a zip as well
as from a checkout. A preset that does not parse is a bug in this package, not a user
error: importing this module raises `PresetError` naming every problem, and the test suite
imports it.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from types import MappingProxyType
from typing import Final

from adapters.base import Adapter
from adapters.described import described_adapter, parse_description
from adapters.described.samples import DescribedSamples

__all__ = ["PRESETS", "PRESET_SOURCES", "PresetError", "load_presets"]

_SUFFIX: Final = ".toml"
# A preset's name is what a source writes as `adapter = "<name>"`.
_NAME: Final = re.compile(r"[a-z][a-z0-9_]*")
_PRESET_KEYS: Final = frozenset({"documentation", "notes", "samples"})


class PresetError(Exception):
    """A preset file that is not a valid description: a bug in the shipped presets."""


def load_presets(
    directory: Traversable | None = None,
) -> tuple[Mapping[str, Adapter], Mapping[str, str]]:
    """Every preset in `directory` (this package's by default): (name -> adapter, name ->
    documentation page), or PresetError listing every problem found, each at its place."""
    directory = directory if directory is not None else files(__name__)
    adapters: dict[str, Adapter] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []
    entries = sorted(
        (entry for entry in directory.iterdir() if entry.name.endswith(_SUFFIX)),
        key=lambda entry: entry.name,
    )
    for entry in entries:
        name = entry.name.removesuffix(_SUFFIX)
        place = f"presets.{name}"
        if not _NAME.fullmatch(name):
            problems.append(f"{place}: a preset name is lower-case letters, digits and _")
            continue
        try:
            table = tomllib.loads(entry.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            problems.append(f"{place}: not valid TOML: {error}")
            continue
        preset = table.pop("preset", None)
        documentation, found = _read_preset_table(preset, place)
        problems.extend(found)
        samples, found = _read_samples(preset, place)
        problems.extend(found)
        description, parse_problems = parse_description(table, place)
        problems.extend(f"{where}: {message}" for where, message in parse_problems)
        if description is None or documentation is None:
            continue
        adapter = described_adapter(name, description, origin="preset")
        if samples:
            # Its type is computed: `gateway sample` sets the fields each type comes from.
            sample = DescribedSamples(description.fields, description.types, samples)
            adapter = dataclasses.replace(adapter, sample=sample)
        adapters[name] = adapter
        sources[name] = documentation
    if problems:
        raise PresetError("invalid presets:\n" + "\n".join(problems))
    return MappingProxyType(adapters), MappingProxyType(sources)


def _read_preset_table(preset: object, place: str) -> tuple[str | None, list[str]]:
    """The `[preset]` table's documentation page, and what is wrong with the table."""
    where = f"{place}.preset"
    if not isinstance(preset, dict):
        return None, [f"{where}: missing; every preset names the page it was written from"]
    problems = [f"{where}.{key}: unknown key" for key in sorted(preset.keys() - _PRESET_KEYS)]
    documentation = preset.get("documentation")
    if not isinstance(documentation, str) or not documentation.startswith("https://"):
        problems.append(f"{where}.documentation: must be the provider's https:// page")
        documentation = None
    if not isinstance(preset.get("notes", ""), str):
        problems.append(f"{where}.notes: must be text")
    return documentation, problems


def _read_samples(preset: object, place: str) -> tuple[dict[str, dict[str, object]], list[str]]:
    """`[preset.samples."<provider type>"]`: the body fields (dotted paths) a sample of that
    type sets, for a preset whose type an expression computes from several fields."""
    where = f"{place}.preset.samples"
    samples = preset.get("samples", {}) if isinstance(preset, dict) else {}
    if not isinstance(samples, dict) or not all(
        isinstance(fields, dict) and all(isinstance(path, str) for path in fields)
        for fields in samples.values()
    ):
        return {}, [f"{where}: a table of provider types, each a table of field paths"]
    return {str(kind): dict(fields) for kind, fields in samples.items()}, []


PRESETS: Mapping[str, Adapter]
PRESET_SOURCES: Mapping[str, str]
PRESETS, PRESET_SOURCES = load_presets()

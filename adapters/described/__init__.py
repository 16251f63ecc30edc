"""Providers described in configuration (docs/reference/providers.md): a TOML table becomes an
`Adapter`.

    description, problems = parse_description(table, "providers.ledgerly")
    adapter = described_adapter("ledgerly", description, "config")

A config file's whole `[providers]` table is read by `described_adapters`, each problem noted
with its place.

`description.py` holds the description's schema and its checks (every problem with its place),
`expressions.py` the compiled field expressions, `templates.py` the signature header's format
and the signed bytes, `schemes.py` the signature schemes, `type_table.py` the type globs,
`reading.py` the events read from a body, `samples.py` sample bodies, and `adapter.py` puts
them together.
"""

from __future__ import annotations

from adapters.described.adapter import described_adapter, described_adapters
from adapters.described.description import Problem, ProviderDescription, parse_description
from adapters.described.schemes import public_key_problem, secret_problem

__all__ = [
    "Problem",
    "ProviderDescription",
    "described_adapter",
    "described_adapters",
    "parse_description",
    "public_key_problem",
    "secret_problem",
]

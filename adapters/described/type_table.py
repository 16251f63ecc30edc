"""A described provider's type table: provider type -> canonical type, with prefix globs.

docs/reference/providers.md: a key ending in `*` maps every provider type with that prefix, and a
value ending in `*` receives the rest of the type (`"payout.*" = "transfer.*"` maps `payout.paid` to
`transfer.paid`); an exact key wins over a prefix, a longer prefix over a shorter one.

A glob can produce a name outside the taxonomy (`payout.in_transit` -> `transfer.in_transit`):
such a type is unmapped, as if no key matched, rather than an invented canonical type; the
description's checks make sure every exact target is canonical.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.taxonomy import is_canonical_type

__all__ = ["TypeTable"]


class TypeTable:
    """The compiled table: exact keys in a dict, prefixes longest first."""

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, table: Mapping[str, str]) -> None:
        self._exact = {key: value for key, value in table.items() if not key.endswith("*")}
        prefixes = [(key[:-1], value) for key, value in table.items() if key.endswith("*")]
        self._prefixes = tuple(sorted(prefixes, key=lambda entry: len(entry[0]), reverse=True))

    def canonical(self, provider_type: str) -> str | None:
        """The canonical type of `provider_type`, or None when unmapped."""
        exact = self._exact.get(provider_type)
        if exact is not None:
            return exact
        for prefix, target in self._prefixes:
            if provider_type.startswith(prefix):
                if not target.endswith("*"):
                    return target
                mapped = target[:-1] + provider_type[len(prefix) :]
                return mapped if is_canonical_type(mapped) else None
        return None

    def provider_types(self) -> tuple[str, ...]:
        """The table's keys as written: exact types, then prefixes (`payment.*`)."""
        return (*self._exact, *(prefix + "*" for prefix, _ in self._prefixes))

    def provider_type(self, wanted: str) -> str | None:
        """A provider type that maps to the canonical type `wanted` (for samples), or None."""
        for key, value in self._exact.items():
            if value == wanted:
                return key
        for prefix, target in self._prefixes:
            if target == wanted:
                candidate = prefix + "sample"
            elif target.endswith("*") and wanted.startswith(target[:-1]):
                candidate = prefix + wanted[len(target) - 1 :]
            else:
                continue
            # A longer prefix or an exact key may take the candidate elsewhere.
            if self.canonical(candidate) == wanted:
                return candidate
        return None

    def first_provider_type(self) -> str | None:
        """The table's first exact key: a typical provider type."""
        return next(iter(self._exact), None)

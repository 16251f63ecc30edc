"""The adapters by name, as `[sources.*] adapter = "..."` names them.

Adding a provider is one module in this package and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from adapters import account_lifecycle, finaegis, finchpay, finexer, finfusion
from adapters.base import Adapter
from adapters.presets import PRESETS

__all__ = ["ADAPTERS", "get_adapter", "shipped_adapters"]

ADAPTERS: Mapping[str, Adapter] = MappingProxyType(
    {
        adapter.name: adapter
        for adapter in (
            finaegis.ADAPTER,
            finexer.ADAPTER,
            finfusion.ADAPTER,
            finchpay.ADAPTER,
            account_lifecycle.ADAPTER,
        )
    }
)


def shipped_adapters() -> dict[str, Adapter]:
    """The adapters every config may name: the built-ins and the presets
    (docs/reference/providers.md)."""
    return {**ADAPTERS, **PRESETS}


def get_adapter(name: str) -> Adapter:
    """The adapter called `name`, or KeyError naming the ones that exist."""
    try:
        return ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise KeyError(f"no adapter named {name!r} (known: {known})") from None

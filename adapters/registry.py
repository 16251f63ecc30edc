"""The adapters by name, as `[sources.*] adapter = "..."` names them.

Adding a provider is one module in this package and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from adapters import account_lifecycle, finaegis, finchpay, finexer, finfusion
from adapters.base import Adapter

__all__ = ["ADAPTERS", "get_adapter"]

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


def get_adapter(name: str) -> Adapter:
    """The adapter called `name`, or KeyError naming the ones that exist."""
    try:
        return ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise KeyError(f"no adapter named {name!r} (known: {known})") from None

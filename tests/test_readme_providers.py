"""docs/reference/providers.md, "Providers described in TOML" and "Presets": its worked example
is a config the gateway loads and a provider that verifies and normalizes as the text says, and
its presets table is the presets as shipped, so neither can drift from the code."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from adapters.presets import PRESET_SOURCES, PRESETS
from adapters.request import InboundRequest
from gateway.config import load_config

PROVIDERS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "providers.md"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def between(start: str, end: str) -> str:
    return PROVIDERS_PAGE.read_text().split(f"<!-- {start} -->")[1].split(f"<!-- {end} -->")[0]


def test_the_worked_example_loads_verifies_and_normalizes(tmp_path: Path) -> None:
    block = between("provider-example:start", "provider-example:end")
    toml = block.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    config = load_config(path, {"LEDGERLY_SECRET": "ledgerly-test-secret"})
    adapter = config.adapters["ledgerly"]
    source = config.sources["ledgerly-main"]
    assert adapter.origin == "config"
    assert adapter.scheme == "hmac"
    body = msgspec.json.encode(
        {
            "id": "evt_1",
            "type": "payout.succeeded",
            "created_at": "2026-01-02T03:00:00Z",
            "data": {"object": {"id": "po_1", "amount": 1050, "currency": "EUR"}},
        }
    )
    assert adapter.sign is not None
    headers = adapter.sign(body, "ledgerly-test-secret", NOW)
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", headers["x-ledgerly-signature"])
    verification = adapter.verify(InboundRequest(body=body, headers=headers, query={}), source, NOW)
    event = adapter.normalize(body, headers, source, NOW, verification)
    assert event.type == "transfer.succeeded"  # "payout.*" = "transfer.*"
    assert event.subject == "po_1"
    assert event.providerid == "evt_1"
    assert event.data.amount is not None
    assert str(event.data.amount.value) == "10.50"


def test_the_presets_table_is_the_presets_as_shipped() -> None:
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in between("presets:start", "presets:end").splitlines()
        if line.startswith("| `")
    ]
    listed = {row[0].strip("`"): (row[1], row[2]) for row in rows}
    assert listed == {
        name: (adapter.scheme, PRESET_SOURCES[name]) for name, adapter in PRESETS.items()
    }
    # The contract's four, at least, and four or more of its list.
    assert {"stripe", "gocardless", "square", "razorpay"} <= set(PRESETS)
    others = {
        "paystack",
        "checkout",
        "revolut",
        "airwallex",
        "wise",
        "lithic",
        "coinbase_commerce",
        "dwolla",
        "modern_treasury",
    }
    assert len(others & set(PRESETS)) >= 4

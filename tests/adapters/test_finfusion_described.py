"""FinFusion described in TOML (config/examples/providers/finfusion.toml) and FinFusion as code
(adapters/finfusion.py) are one provider: the same canonical event on every fixture and on
generated bodies, the same signature, each accepting what the other signs.

FinFusion stays code (it is a built-in); the description is the README's worked example of a
provider in TOML, and bench/adapters.py measures it against the code.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import Adapter
from adapters.described import described_adapter, parse_description
from adapters.errors import AdapterError, InvalidPayload
from adapters.finfusion import ADAPTER as FINFUSION
from adapters.finfusion import TYPE_TABLE
from adapters.request import InboundRequest
from adapters.source import Secret, SourceSettings
from schemas.event import encode_event
from tests.support import FIXTURES, NOW, settings_for

EXAMPLE = Path(__file__).resolve().parents[2] / "config/examples/providers/finfusion.toml"
NAME = "finfusion_described"


def described_finfusion() -> Adapter:
    table = tomllib.loads(EXAMPLE.read_text())["providers"][NAME]
    description, problems = parse_description(table, f"providers.{NAME}")
    assert problems == []
    assert description is not None
    # Named as the built-in, so that `provider` and unmapped types read the same.
    return described_adapter("finfusion", description, "config")


DESCRIBED = described_finfusion()
BODIES = sorted(
    path for path in (FIXTURES / "finfusion").glob("*.json") if not path.name.endswith(".case.json")
)


def outcome(adapter: Adapter, body: bytes, source: SourceSettings) -> bytes | str:
    """The encoded event, or the kind of error (the two need not word a 422 alike)."""
    try:
        return encode_event(adapter.normalize(body, {}, source, NOW))
    except InvalidPayload:
        return "invalid_payload"


@pytest.mark.parametrize("path", BODIES, ids=lambda path: path.stem)
def test_every_fixture_gives_the_same_event(path: Path) -> None:
    case_path = path.with_name(path.stem + ".case.json")
    case = msgspec.json.decode(case_path.read_bytes()) if case_path.exists() else {}
    source = settings_for("finfusion", **case.get("settings", {}))
    assert outcome(DESCRIBED, path.read_bytes(), source) == outcome(
        FINFUSION, path.read_bytes(), source
    )


_text = st.text(min_size=1, max_size=12)
_maybe_text = st.none() | _text
_money = st.none() | st.integers(min_value=-(10**12), max_value=10**12)
_types = st.sampled_from(sorted(TYPE_TABLE)) | st.from_regex(
    r"[a-z]{1,8}\.[a-z_]{1,10}", fullmatch=True
)
_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": st.none() | _text | st.integers(min_value=0, max_value=10**9),
        "amount": _money,
        "currency": st.none() | st.sampled_from(["usd", "eur", "GBP", "jpy", "xxx1"]),
        "status": _maybe_text,
        "reference": _maybe_text,
        "balance": _money,
        "account_number": _maybe_text,
        "account_name": _maybe_text,
        "name": _maybe_text,
        "iban": _maybe_text,
    },
)
_events = st.fixed_dictionaries(
    {"id": _text, "type": _types},
    optional={
        "created": st.integers(min_value=0, max_value=4_000_000_000),
        "data": st.fixed_dictionaries({"object": _objects}),
        "livemode": st.booleans(),
    },
)


@settings(max_examples=300, deadline=None)
@given(event=_events, currency=st.none() | st.sampled_from(["GBP", "NGN"]))
def test_generated_bodies_give_the_same_event_or_both_refuse(
    event: dict[str, Any], currency: str | None
) -> None:
    body = msgspec.json.encode(event)
    source = settings_for("finfusion", currency=currency)
    assert outcome(DESCRIBED, body, source) == outcome(FINFUSION, body, source)


@settings(max_examples=100, deadline=None)
@given(
    body=st.binary(min_size=1, max_size=200),
    secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=40),
    seconds=st.integers(min_value=1_600_000_000, max_value=2_000_000_000),
)
def test_the_same_signature_and_each_accepts_what_the_other_signs(
    body: bytes, secret: str, seconds: int
) -> None:
    now = datetime.fromtimestamp(seconds, UTC)
    whsec = f"whsec_{secret}"
    assert DESCRIBED.sign is not None
    assert FINFUSION.sign is not None
    headers = DESCRIBED.sign(body, whsec, now)
    assert headers == FINFUSION.sign(body, whsec, now)
    source = SourceSettings(name="ff", adapter="finfusion", secrets=(Secret(whsec),))
    request = InboundRequest(body=body, headers=headers, query={})
    assert DESCRIBED.verify(request, source, now) == FINFUSION.verify(request, source, now)
    tampered = InboundRequest(body=body + b" ", headers=headers, query={})
    for adapter in (DESCRIBED, FINFUSION):
        with pytest.raises(AdapterError):
            adapter.verify(tampered, source, now)

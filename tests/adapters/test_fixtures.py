"""Every fixture under tests/fixtures/<adapter>/ becomes the canonical event its `.case.json` says.

The expectations were written by hand from the reference (docs/) and the providers' pages, not
by running the code, so this is an independent oracle for the mappings. `expect` is partial:
each key given must match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.registry import ADAPTERS
from schemas.event import decode_event, encode_event
from schemas.timestamps import parse_timestamp
from tests.support import FIXTURES, NOW, settings_for

ABSENT = "__absent__"
CASES = sorted(FIXTURES.glob("*/*.case.json"))


def _case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name.removesuffix('.case.json')}"


def _assert_partial(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for key, want in expected.items():
        if want == ABSENT:
            assert key not in actual, f"{where}.{key} should be absent"
        elif key == "data":
            _assert_partial(actual["data"], want, f"{where}.data")
        else:
            assert key in actual, f"{where}.{key} is missing"
            assert actual[key] == want, f"{where}.{key}: {actual[key]!r} != {want!r}"


def test_every_adapter_has_fixtures() -> None:
    covered = {path.parent.name for path in CASES}
    assert covered == set(ADAPTERS)


@pytest.mark.parametrize("case_path", CASES, ids=_case_id)
def test_fixture_normalizes_as_expected(case_path: Path) -> None:
    adapter = ADAPTERS[case_path.parent.name]
    case = msgspec.json.decode(case_path.read_bytes())
    body = case_path.with_name(case_path.name.removesuffix(".case.json") + ".json").read_bytes()
    settings = settings_for(adapter.name, **case.get("settings", {}))
    received_at = parse_timestamp(case["received_at"]) if "received_at" in case else NOW

    event = adapter.normalize(body, case.get("headers", {}), settings, received_at)

    encoded = encode_event(event)
    produced = msgspec.json.decode(encoded)
    _assert_partial(produced, case["expect"], "$")
    assert produced["source"] == f"/sources/{settings.name}"
    assert produced["provider"] == adapter.name
    # The provider's body travels verbatim: the very bytes, PHP's `\/` escapes included.
    assert bytes(event.data.provider_payload) == body.strip()
    assert decode_event(encoded) == event


@pytest.mark.parametrize("case_path", CASES, ids=_case_id)
def test_fixture_event_id_is_stable_across_retries(case_path: Path) -> None:
    adapter = ADAPTERS[case_path.parent.name]
    case = msgspec.json.decode(case_path.read_bytes())
    body = case_path.with_name(case_path.name.removesuffix(".case.json") + ".json").read_bytes()
    settings = settings_for(adapter.name, **case.get("settings", {}))
    headers = case.get("headers", {})

    first = adapter.normalize(body, headers, settings, NOW)
    # The provider retries an hour later: a new receive time, the same event.
    retry = adapter.normalize(body, headers, settings, parse_timestamp("2026-01-02T04:04:05Z"))
    other_source = adapter.normalize(body, headers, settings_for(adapter.name, name="b"), NOW)

    assert first.id == retry.id
    assert first.id != other_source.id

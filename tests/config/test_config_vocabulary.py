"""check-config on the product's vocabularies: currency codes (ISO 4217) and route type globs
(the canonical taxonomy, unmapped `<adapter>.<type>`, open kinds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

TOKEN = "token-do-not-print-93f1"


def config_with(tmp_path: Path, *, currency: str = "GBP", types: str | None = None) -> Path:
    route_types = "" if types is None else f"types = {types}\n"
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[sources.lifecycle]
adapter = "account_lifecycle"
token = "{TOKEN}"
currency = "{currency}"

[subscribers.audit]
kind = "file"
path = "audit.jsonl"

[[routes]]
{route_types}subscribers = ["audit"]
"""
    )
    return path


@pytest.mark.parametrize("code", ["GBP", "ngn", "JPY", "XAU", "USDT", "usdc", "BTC"])
def test_iso_4217_codes_and_crypto_tickers_are_currencies(tmp_path: Path, code: str) -> None:
    config = load_config(config_with(tmp_path, currency=code))
    assert config.sources["lifecycle"].currency == code.upper()


@pytest.mark.parametrize("code", ["XYZ", "GPB", "EUA"])
def test_a_three_letter_code_outside_iso_4217_is_an_error(tmp_path: Path, code: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config_with(tmp_path, currency=code))
    (problem,) = raised.value.problems
    assert problem.place == "sources.lifecycle.currency"
    assert "not an ISO 4217 currency code" in problem.message
    assert f'"{code}"' in problem.message


def test_the_closest_iso_code_is_suggested(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(config_with(tmp_path, currency="GPB"))
    assert '(did you mean "GBP"?)' in raised.value.problems[0].message


@pytest.mark.parametrize(
    "types",
    [
        '["payment.*"]',
        '["*"]',
        '["payment.succeeded", "card.?ctivated"]',
        '["*.created"]',
        '["finexer.*"]',  # unmapped Finexer types
        '["finchpay.SOMETHING_NEW"]',
        '["account_lifecycle.*"]',
        '["workflow.*", "system.maintenance"]',  # open kinds: any action
        '["fin*.x"]',
    ],
)
def test_type_globs_that_can_match_an_event_raise_no_warning(tmp_path: Path, types: str) -> None:
    assert load_config(config_with(tmp_path, types=types)).warnings == ()


def test_a_type_glob_that_matches_nothing_is_a_warning_naming_the_closest(
    tmp_path: Path,
) -> None:
    config = load_config(config_with(tmp_path, types='["payment.*", "paymnt.*"]'))
    (warning,) = config.warnings
    assert warning.startswith('routes[0].types[1]: "paymnt.*" matches no event type')
    assert '"payment.*"' in warning


def test_a_misspelt_type_names_the_type_meant(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, types='["payment.succeded"]'))
    (warning,) = config.warnings
    assert '"payment.succeeded"' in warning

"""`[store] retention_days` in the config: read from the store section, a positive number of
days. (What retention deletes is the store's, on every backend: tests/store/test_retention.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

SOURCE = '[sources.x]\nadapter = "finchpay"\ntoken = "t0123456789abcdef"\n'


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("", 30.0), ("retention_days = 7", 7.0), ("retention_days = 0.25", 0.25)],
)
def test_retention_days_is_read_from_the_store_section(
    tmp_path: Path, setting: str, expected: float
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[store]\n{setting}\n{SOURCE}")
    assert load_config(path).store.retention_days == expected


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", '"30"', "true", "100000"])
def test_retention_days_must_be_a_positive_number_of_days(tmp_path: Path, value: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[store]\nretention_days = {value}\n{SOURCE}")
    with pytest.raises(ConfigError, match=r"store\.retention_days"):
        load_config(path)

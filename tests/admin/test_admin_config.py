"""`[admin]`: off by default, a token or a rotation of tokens, kept as Secrets, never empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.source import Secret
from gateway.config import ConfigError, GatewayConfig, load_config
from tests.service.harness import BASE_CONFIG


def load(tmp_path: Path, extra: str, environ: dict[str, str] | None = None) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(BASE_CONFIG + extra)
    return load_config(path, environ or {})


def test_admin_is_off_without_a_token(tmp_path: Path) -> None:
    assert not load(tmp_path, "").admin.enabled


def test_a_token_or_a_rotation_turns_it_on_and_never_prints(tmp_path: Path) -> None:
    one = load(tmp_path, '[admin]\ntoken = "${ADMIN_TOKEN}"\n', {"ADMIN_TOKEN": "t-1234567890"})
    assert one.admin.tokens == (Secret("t-1234567890"),)
    assert "t-1234567890" not in repr(one)
    two = load(tmp_path, '[admin]\ntokens = ["a-1", "b-2"]\n')
    assert two.admin.enabled
    assert [token.reveal() for token in two.admin.tokens] == ["a-1", "b-2"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[admin]\ntoken = ""\n', "admin.token: must not be empty"),
        ('[admin]\ntoken = "  "\n', "admin.token: an empty token would open the admin API"),
        ('[admin]\ntokens = ["ok", " "]\n', "admin.tokens[1]: an empty token"),
        ('[admin]\ntoken = "a"\ntokens = ["b"]\n', "set either token or tokens"),
        ('[admin]\ntokn = "a"\n', "admin.tokn"),
    ],
)
def test_bad_admin_sections_are_named(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, extra)
    assert expected in str(caught.value)

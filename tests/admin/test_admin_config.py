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


@pytest.mark.parametrize(
    ("extra", "place"),
    [
        ('[admin]\ntoken = "x"\n', "admin.token"),
        ('[admin]\ntoken = "admin-token-15c"\n', "admin.token"),  # 15 characters
        ('[admin]\ntoken = "aaaaaaaaaaaaaaaaaaaaaaaa"\n', "admin.token"),
        ('[admin]\ntokens = ["4c1e0b7f9d2a6e8355b1c0d4", "1234123412341234"]\n', "admin.tokens[1]"),
    ],
)
def test_a_weak_admin_token_is_warned_of_without_being_quoted(
    tmp_path: Path, extra: str, place: str
) -> None:
    config = load(tmp_path, extra)
    assert config.admin.enabled  # it still works: a warning, not a refusal
    (warning,) = config.warnings
    assert warning.startswith(f"{place}: too weak to keep the admin API closed")
    token = extra.split('"')[-2]  # the weak one: the last quoted value
    # One letter is in any sentence; a longer token must not be anywhere in it.
    assert (token if len(token) > 1 else f'"{token}"') not in warning
    assert "the same few repeated" in warning


def test_a_random_admin_token_from_the_environment_gets_no_warning(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[admin]\ntoken = "${FINRELAY_ADMIN_TOKEN}"\n',
        {"FINRELAY_ADMIN_TOKEN": "adm-4c1e0b7f9d2a6e8355b1c0d4"},
    )
    assert config.warnings == ()


SHIPPED = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize(
    "name", ["gateway.toml", "examples/production.toml", "examples/queues.toml"]
)
def test_each_shipped_config_shows_how_to_turn_the_admin_page_on(tmp_path: Path, name: str) -> None:
    text = (SHIPPED / name).read_text()
    assert "/admin/" in text
    lines = text.splitlines()
    start = lines.index("# [admin]")
    table = "\n".join(line.removeprefix("# ") for line in lines[start : start + 2]) + "\n"
    assert table == '[admin]\ntoken = "${FINRELAY_ADMIN_TOKEN}"\n'
    # Uncommented, it turns the page on, with the token from the environment.
    config = load(tmp_path, table, {"FINRELAY_ADMIN_TOKEN": "adm-4c1e0b7f9d2a6e8355b1c0d4"})
    assert config.admin.enabled

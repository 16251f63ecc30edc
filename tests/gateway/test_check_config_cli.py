"""`gateway check-config` as a user runs it: a subprocess, exit codes, one problem a line on stderr.

Every broken file under configs/ says in its first line what is wrong with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).parent / "configs"

# Each broken file and the start of a line check-config must print for it: place and problem.
BROKEN: dict[str, str] = {
    "unknown_adapter.toml": 'sources.payments.adapter: unknown adapter "stripe" (known:'
    " account_lifecycle, finaegis, finchpay, finexer, finfusion)",
    "route_to_missing_subscriber.toml": 'routes[1].subscribers[0]: no subscriber named "ledgr"'
    ' (did you mean "ledger"?)',
    "unset_env_var.toml": "sources.finfusion-main.secret: environment variable"
    " FINRELAY_TEST_UNSET_SECRET is not set",
    "unsigned_source_without_token.toml": "sources.finchpay: finchpay does not sign its webhooks:"
    " set token and/or allow_ips (or allow_unauthenticated = true to accept anyone)",
    "secret_on_unsigned_source.toml": "sources.lifecycle.secret: account_lifecycle does not sign"
    " its webhooks; use token or allow_ips",
    "bad_cidr.toml": 'sources.finchpay.allow_ips[1]: not an IP address or CIDR: "203.0.113.256"',
    "bad_trusted_proxy.toml": 'server.trusted_proxies[0]: "10.1.2.3/8" has host bits set'
    " (did you mean 10.0.0.0/8?)",
    "bad_subscriber_url.toml": "subscribers.ledger.url: expected an http:// or https:// URL",
    "unknown_key_typo.toml": 'sources.finexer.secert: unknown key (did you mean "secret"?)',
    "signed_source_without_secret.toml": "sources.finaegis.secret: required: finaegis signs its"
    " webhooks (or secrets = [...] during a rotation)",
    "bad_subscriber_secret.toml": "subscribers.ledger.secret: the key after whsec_ is too short:"
    " at least 16 bytes (base64 of random bytes)",
    "missing_subscriber_secret.toml": "subscribers.ledger.secret: required for an http subscriber:"
    " whsec_<base64>, so it can verify what it receives",
    "bad_port.toml": "server.port: must be from 0 to 65535, not 80800",
    # tomllib's wording, up to the line (its column count is its own business).
    "toml_syntax_error.toml": "file: not valid TOML: Illegal character '\\n' (at line 4,",
    "unsupported_store_url.toml": "store.url: the mysql store is not supported;"
    " use sqlite:///<path> or postgresql://...",
    "in_memory_store.toml": "store.url: an in-memory database loses every event when the process"
    " stops; give a file path: sqlite:///<path>",
    "no_sources.toml": "sources: no [sources.*]: nothing can be received",
    "unsupported_subscriber_kind.toml": 'subscribers.stream.kind: unknown kind "kafka"'
    " (supported: http, file, redis, nats, amqp)",
    "bad_ordering.toml": 'subscribers.ledger.ordering: unknown ordering "subjects"'
    ' (did you mean "subject"?) (supported: subject, none)',
    "redis_without_stream.toml": "subscribers.ledger-stream.stream: required for a redis"
    " subscriber",
    "nats_wildcard_subject.toml": "subscribers.risk.subject: must not contain the wildcard *:"
    " publishing needs one subject",
    "amqp_url_without_host.toml": "subscribers.accounting.url: the URL has no host",
    "bad_retry_schedule.toml": "subscribers.audit.retry_schedule[1]: must be from 0 up to 86400"
    " seconds, not -1",
    "unknown_section.toml": 'route: unknown section (did you mean "routes"?)',
    "many_problems.toml": "server.port: must be from 0 to 65535, not -1",
}


def check_config(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway check-config ARGS` from the repository root, with a clean environment."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name != "GATEWAY_CONFIG" and not name.startswith("FINRELAY_TEST_")
    }
    env.update(environ)
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_every_broken_file_has_a_case() -> None:
    assert sorted(path.name for path in CONFIGS.glob("*.toml")) == sorted(BROKEN)


@pytest.mark.parametrize(("name", "expected"), BROKEN.items(), ids=BROKEN.keys())
def test_a_broken_file_exits_1_and_names_its_problem(name: str, expected: str) -> None:
    config = relative(CONFIGS / name)
    result = check_config("--config", config)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{config}: {expected}") for line in lines), result.stderr
    assert result.stdout == ""


def test_every_problem_of_a_file_is_printed_on_its_own_line() -> None:
    config = relative(CONFIGS / "many_problems.toml")
    result = check_config("--config", config)
    assert result.returncode == 1
    places = [
        line.removeprefix(f"{config}: ").partition(": ")[0] for line in result.stderr.splitlines()
    ]
    assert places == [
        "server.port",
        "store.url",
        "sources.finfusion-main.secret",
        "sources.finchpay.allow_ips[0]",
        "subscribers.ledger.url",
        "subscribers.ledger.secret",
        "routes[0].sources[0]",
    ]


def test_the_default_config_is_valid() -> None:
    result = check_config("--config", "config/gateway.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "config/gateway.toml: ok (5 sources, 1 subscribers, 1 routes)\n"
    assert result.stderr == ""


def test_without_config_option_the_default_config_is_checked() -> None:
    result = check_config()
    assert result.returncode == 0, result.stderr
    assert "ok (5 sources" in result.stdout


def test_gateway_config_variable_names_the_file() -> None:
    config = relative(CONFIGS / "bad_port.toml")
    result = check_config(GATEWAY_CONFIG=config)
    assert result.returncode == 1
    assert f"{config}: server.port: must be from 0 to 65535, not 80800" in result.stderr


def test_the_production_example_is_valid_with_its_environment() -> None:
    environ = {
        name: "whsec_ZW52LXNlY3JldC1mb3ItdGhlLWNsaS10ZXN0"
        for name in (
            "FINFUSION_EU_SECRET",
            "FINFUSION_US_SECRET",
            "FINFUSION_US_SECRET_OLD",
            "FINAEGIS_SECRET",
            "FINEXER_SECRET",
            "FINCHPAY_TOKEN",
            "LIFECYCLE_TOKEN",
            "LEDGER_WEBHOOK_SECRET",
            "RISK_WEBHOOK_SECRET",
        )
    }
    result = check_config("--config", "config/examples/production.toml", **environ)
    assert result.returncode == 0, result.stderr
    assert "ok (6 sources, 3 subscribers, 3 routes)" in result.stdout


def test_a_missing_file_exits_1() -> None:
    result = check_config("--config", "config/absent.toml")
    assert result.returncode == 1
    assert result.stderr.startswith("config/absent.toml: file: cannot read config/absent.toml")


def test_an_environment_value_never_reaches_stderr(tmp_path: Path) -> None:
    config = tmp_path / "leaky.toml"
    config.write_text(
        """
        [sources.finchpay]
        adapter = "finchpay"
        token = "t"
        allow_ips = ["${FINRELAY_TEST_CIDR}"]

        [subscribers.ledger]
        url = "https://ledger.example/"
        secret = "${FINRELAY_TEST_SUBSCRIBER_SECRET}"

        [[routes]]
        subscribers = ["ledger"]
        """,
        encoding="utf-8",
    )
    secret = "whsec_this-is-the-secret-value"
    cidr = "cidr-that-is-secret-too"
    result = check_config(
        "--config",
        str(config),
        FINRELAY_TEST_SUBSCRIBER_SECRET=secret,
        FINRELAY_TEST_CIDR=cidr,
    )
    assert result.returncode == 1
    assert "subscribers.ledger.secret: the part after whsec_ is not valid base64" in result.stderr
    assert "allow_ips[0]: not an IP address or CIDR: (the value of ${FINRELAY_TEST_CIDR})" in (
        result.stderr
    )
    assert secret not in result.stderr
    assert cidr not in result.stderr


def test_an_unauthenticated_source_passes_with_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "open.toml"
    config.write_text(
        '[sources.sandbox]\nadapter = "account_lifecycle"\nallow_unauthenticated = true\n'
        '[subscribers.audit]\nkind = "file"\npath = "a.jsonl"\n'
        '[[routes]]\nsubscribers = ["audit"]\n',
        encoding="utf-8",
    )
    result = check_config("--config", str(config))
    assert result.returncode == 0, result.stderr
    [warning] = result.stderr.splitlines()
    assert warning.startswith(f"{config}: warning: source sandbox accepts unauthenticated requests")


# The test cluster's kind of password (tests/postgres_server.py): letters a URL must encode.
DB_PASSWORD = "pw@5e1d07/:%"
DB_PASSWORD_ENCODED = "pw%405e1d07%2F%3A%25"


@pytest.mark.parametrize(
    "url",
    [
        # Valid: the other problem makes check-config print.
        f"postgresql://finrelay:{DB_PASSWORD_ENCODED}@db.internal/finrelay?sslmode=require",
        # Broken where libpq would quote the password: an escape it cannot read.
        f"postgresql://finrelay:{DB_PASSWORD_ENCODED}%zz@db.internal/finrelay",
        f"postgresql://finrelay@db.internal/finrelay?password={DB_PASSWORD_ENCODED}&sslmod=x",
        "postgresql://finrelay:${FINRELAY_TEST_PGPASSWORD}@db.internal:0/finrelay",
    ],
)
def test_a_database_password_never_reaches_the_output(tmp_path: Path, url: str) -> None:
    config = tmp_path / "nodes.toml"
    config.write_text(
        f"""
        [server]
        port = -1

        [store]
        url = "{url}"

        [sources.finchpay]
        adapter = "finchpay"
        token = "t"

        [subscribers.audit]
        kind = "file"
        path = "audit.jsonl"

        [[routes]]
        subscribers = ["audit"]
        """,
        encoding="utf-8",
    )
    result = check_config("--config", str(config), FINRELAY_TEST_PGPASSWORD=DB_PASSWORD_ENCODED)
    assert result.returncode == 1
    assert f"{config}: server.port: must be from 0 to 65535, not -1" in result.stderr
    output = result.stdout + result.stderr
    for secret in (DB_PASSWORD, DB_PASSWORD_ENCODED, "pw@5e1d07", "pw%405e1d07"):
        assert secret not in output


def test_an_unknown_role_exits_1_with_its_place(tmp_path: Path) -> None:
    config = tmp_path / "role.toml"
    config.write_text(
        (REPO / "config" / "gateway.toml")
        .read_text(encoding="utf-8")
        .replace("[server]\n", '[server]\nrole = "ingester"\n', 1),
        encoding="utf-8",
    )
    result = check_config("--config", str(config))
    assert result.returncode == 1
    assert result.stderr == (
        f'{config}: server.role: unknown role "ingester" (did you mean "ingest"?)'
        " (supported: all, ingest, deliver)\n"
    )

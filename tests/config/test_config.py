"""The config file (docs/reference/configuration.md): what loads, what it becomes, every problem and
its place."""

from __future__ import annotations

import os
import textwrap
from ipaddress import ip_network
from pathlib import Path

import pytest

from adapters.registry import ADAPTERS
from adapters.source import Secret
from gateway.config import (
    DEFAULT_CONFIG_PATH,
    STANDARD_WEBHOOKS_SCHEDULE,
    ConfigError,
    GatewayConfig,
    RouteConfig,
    load_config,
    shipped_adapters,
    worker_count,
)
from gateway.store.sqlite import sqlite_path_from_url

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "config" / "examples" / "production.toml"

# Valid Standard Webhooks secrets: whsec_ and the base64 of 24 and 16 bytes.
SUBSCRIBER_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SHORT_BUT_ENOUGH = "whsec_AAECAwQFBgcICQoLDA0ODw=="
PROVIDER_SECRET = "whsec_provider_secret_do_not_print_1"
TOKEN = "token-do-not-print-93f1"
# Every adapter a source may name without a [providers.*] of its own: built-ins and presets.
KNOWN = ", ".join(sorted(shipped_adapters()))

# The smallest valid file: one source, one subscriber, one route. Cases append to it.
MINIMAL = f"""
[sources.finchpay]
adapter = "finchpay"
token = "{TOKEN}"

[subscribers.audit]
kind = "file"
path = "audit.jsonl"

[[routes]]
subscribers = ["audit"]
"""

PRODUCTION_ENVIRON = {
    "FINFUSION_EU_SECRET": "whsec_env_eu_9a8b7c6d5e4f",
    "FINFUSION_US_SECRET": "whsec_env_us_new_1q2w3e4r",
    "FINFUSION_US_SECRET_OLD": "whsec_env_us_old_5t6y7u8i",
    "FINAEGIS_SECRET": "env-finaegis-0p9o8i7u6y",
    "FINEXER_SECRET": "env-finexer-z1x2c3v4b5",
    "FINCHPAY_TOKEN": "env-finchpay-token-n6m7",
    "LIFECYCLE_TOKEN": "env-lifecycle-token-k8j9",
    "LEDGER_WEBHOOK_SECRET": "whsec_ZW52LWxlZGdlci1zZWNyZXQtMjQtYnl0ZXM=",
    "RISK_WEBHOOK_SECRET": "whsec_ZW52LXJpc2stc2VjcmV0LTE2Yg==",
}


def production(tmp_path: Path) -> Path:
    """The production example with its audit log in a directory that exists here: a missing
    directory is a problem (serve would refuse to start), and /var/log/finrelay is the
    production host's."""
    path = tmp_path / "production.toml"
    path.write_text(PRODUCTION.read_text().replace("/var/log/finrelay/", f"{tmp_path}/"))
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> GatewayConfig:
    return load_config(write(tmp_path, text), environ={} if environ is None else environ)


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    """Every problem of the file, as `check-config` prints them (without the file name)."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    return [str(problem) for problem in caught.value.problems]


# --- The shipped files ----------------------------------------------------------------------------


def test_the_default_config_loads_with_one_source_per_adapter() -> None:
    config = load_config(REPO / DEFAULT_CONFIG_PATH, environ={})
    assert sorted(config.sources) == sorted(ADAPTERS)
    for name, source in config.sources.items():
        assert source.name == name
        assert source.adapter == name
    assert config.sources["finfusion"].secrets[0].reveal().startswith("whsec_")
    assert config.sources["finchpay"].tokens
    assert config.sources["account_lifecycle"].currency == "GBP"
    assert config.store.url.reveal() == "sqlite:///./data/gateway.db"
    assert sqlite_path_from_url(config.store.url.reveal()) == Path("data/gateway.db")
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    audit = config.subscribers["audit-log"]
    assert (audit.name, audit.kind, audit.path) == ("audit-log", "file", Path("data/events.jsonl"))
    assert config.routes == (RouteConfig(subscribers=("audit-log",)),)
    assert config.warnings == ()


def test_the_default_config_marks_its_secrets_as_test_only() -> None:
    text = (REPO / DEFAULT_CONFIG_PATH).read_text(encoding="utf-8")
    config = load_config(REPO / DEFAULT_CONFIG_PATH, environ={})
    for source in config.sources.values():
        for secret in (*source.secrets, *source.tokens):
            line = next(line for line in text.splitlines() if secret.reveal() in line)
            assert "TEST-ONLY" in line


def test_the_production_example_loads_with_its_environment(tmp_path: Path) -> None:
    config = load_config(production(tmp_path), environ=PRODUCTION_ENVIRON)
    assert {"finfusion-eu", "finfusion-us"} <= set(config.sources)
    assert config.sources["finfusion-eu"].adapter == config.sources["finfusion-us"].adapter
    assert config.sources["finfusion-us"].secrets == (
        Secret(PRODUCTION_ENVIRON["FINFUSION_US_SECRET"]),
        Secret(PRODUCTION_ENVIRON["FINFUSION_US_SECRET_OLD"]),
    )
    finchpay = config.sources["finchpay"]
    assert finchpay.tokens == (Secret(PRODUCTION_ENVIRON["FINCHPAY_TOKEN"]),)
    assert finchpay.allow_ips == (ip_network("203.0.113.0/24"), ip_network("198.51.100.17/32"))
    ledger = config.subscribers["ledger"]
    assert ledger.kind == "http"
    assert ledger.retry_schedule == (5, 60, 300, 1800, 7200, 21600, 86400)
    assert ledger.max_in_flight == 32
    assert any(route.types and route.sources is None for route in config.routes)
    assert any(route.sources for route in config.routes)
    assert sqlite_path_from_url(config.store.url.reveal()) == Path("/var/lib/finrelay/gateway.db")
    assert config.warnings == ()


def test_the_production_example_needs_its_audit_log_directory() -> None:
    if Path("/var/log/finrelay").is_dir():
        pytest.skip("this machine has the production host's directory")
    with pytest.raises(ConfigError) as caught:
        load_config(PRODUCTION, environ=PRODUCTION_ENVIRON)
    assert [str(problem) for problem in caught.value.problems] == [
        "subscribers.audit-log.path: the directory '/var/log/finrelay' does not exist (relative"
        " paths are from the working directory): serve will refuse to start"
    ]


def test_the_production_example_reports_each_unset_variable_at_its_place(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(production(tmp_path), environ={})
    reported = [str(problem) for problem in caught.value.problems]
    assert (
        "sources.finfusion-us.secrets[1]: environment variable FINFUSION_US_SECRET_OLD is not set"
        in reported
    )
    assert (
        "subscribers.ledger.secret: environment variable LEDGER_WEBHOOK_SECRET is not set"
        in reported
    )
    assert len(reported) == len(PRODUCTION_ENVIRON)


def test_the_production_example_never_shows_its_secrets(tmp_path: Path) -> None:
    config = load_config(production(tmp_path), environ=PRODUCTION_ENVIRON)
    shown = repr(config)
    for value in PRODUCTION_ENVIRON.values():
        assert value not in shown


# --- What a valid file becomes --------------------------------------------------------------------


def test_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.server.port == 8080
    assert config.server.max_body_bytes == 1_048_576
    assert config.server.trusted_proxies == ()
    assert config.server.workers is None  # "auto": one per CPU
    assert worker_count(config.server) == min(os.cpu_count() or 1, 8)
    assert config.server.role == "all"
    assert config.store.url.reveal() == "sqlite:///./data/gateway.db"
    source = config.sources["finchpay"]
    assert source.token_param == "token"
    assert source.tolerance_seconds == 300
    assert source.tokens == (Secret(TOKEN),)
    assert config.routes == (RouteConfig(sources=None, types=None, subscribers=("audit",)),)


def test_keys_of_the_removed_writer_process_say_what_to_do_instead(tmp_path: Path) -> None:
    """A config written for the writer-process layout gets a message naming what replaced
    each key, not a bare "unknown key" (every problem at once, with its place)."""
    text = (
        '[server]\ndeliver_processes = 2\ndeliver_nice = 10\n[store]\nwriter = "process"\n'
        + MINIMAL
    )
    assert problems(tmp_path, text) == [
        "server.deliver_processes: removed: every worker process delivers now; set"
        " server.workers instead",
        "server.deliver_nice: removed: there are no deliver processes any more; delete the line",
        "store.writer: removed: every worker process opens the store itself now; delete the line",
    ]


def test_routes_keep_file_order_and_their_filters(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MINIMAL
        + """
        [[routes]]
        sources = ["finchpay"]
        types = ["payment.*", "transfer.succeeded", "*"]
        subscribers = ["audit"]
        """,
    )
    assert config.routes[1] == RouteConfig(
        sources=("finchpay",),
        types=("payment.*", "transfer.succeeded", "*"),
        subscribers=("audit",),
    )


def test_http_subscriber_settings(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MINIMAL
        + f"""
        [subscribers.ledger]
        url = "https://ledger.example:8443/events?x=1"
        secrets = ["{SUBSCRIBER_SECRET}", "{SHORT_BUT_ENOUGH}"]
        timeout_seconds = 2.5
        retry_schedule = [0, 1.5, 86400]
        max_in_flight = 10000

        [[routes]]
        subscribers = ["ledger"]
        """,
    )
    ledger = config.subscribers["ledger"]
    assert ledger.name == "ledger"
    assert ledger.kind == "http"
    assert ledger.url == "https://ledger.example:8443/events?x=1"
    assert ledger.secrets == (Secret(SUBSCRIBER_SECRET), Secret(SHORT_BUT_ENOUGH))
    assert ledger.timeout_seconds == 2.5
    assert ledger.retry_schedule == (0.0, 1.5, 86400.0)
    assert ledger.max_in_flight == 10000


def test_subscriber_defaults_are_the_standard_webhooks_schedule(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    audit = config.subscribers["audit"]
    assert audit.retry_schedule == STANDARD_WEBHOOKS_SCHEDULE
    assert audit.secrets == ()
    assert audit.path == Path("audit.jsonl")


def test_a_retry_schedule_too_long_still_has_each_delay_checked(tmp_path: Path) -> None:
    # Both are to fix: check-config says both at once rather than one per run.
    schedule = ", ".join(["5"] * 21 + ["-1"])
    text = MINIMAL.replace('kind = "file"', f'kind = "file"\nretry_schedule = [{schedule}]')
    assert problems(tmp_path, text) == [
        "subscribers.audit.retry_schedule: at most 20 retries, not 22",
        "subscribers.audit.retry_schedule[21]: must be from 0 up to 86400 seconds, not -1",
    ]


def test_an_empty_retry_schedule_means_a_single_attempt(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL.replace('kind = "file"', 'kind = "file"\nretry_schedule = []'))
    assert config.subscribers["audit"].retry_schedule == ()


def test_source_settings_are_normalized(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MINIMAL
        + """
        [sources.finexer-uk]
        adapter = "finexer"
        secret = "fx-secret"
        token = "key-in-the-url"
        token_param = "key"
        signature_header = "X-FX-Signature"
        tolerance_seconds = 600
        currency = "gbp"
        uri = "urn:finrelay:finexer-uk"
        allow_ips = ["192.0.2.10", "2001:db8::1", "198.51.100.0/24"]
        """,
    )
    source = config.sources["finexer-uk"]
    assert source.name == "finexer-uk"
    assert source.adapter == "finexer"
    assert source.secrets == (Secret("fx-secret"),)
    assert source.tokens == (Secret("key-in-the-url"),)
    assert source.token_param == "key"
    assert source.signature_header == "x-fx-signature"
    assert source.tolerance_seconds == 600
    assert source.currency == "GBP"
    assert source.source_uri == "urn:finrelay:finexer-uk"
    assert source.allow_ips == (
        ip_network("192.0.2.10/32"),
        ip_network("2001:db8::1/128"),
        ip_network("198.51.100.0/24"),
    )


def test_secrets_and_tokens_rotate_as_lists(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MINIMAL.replace(f'token = "{TOKEN}"', 'tokens = ["new-token", "old-token"]')
        + """
        [sources.finfusion]
        adapter = "finfusion"
        secrets = ["whsec_new", "whsec_old"]
        """,
    )
    assert config.sources["finchpay"].tokens == (Secret("new-token"), Secret("old-token"))
    assert config.sources["finfusion"].secrets == (Secret("whsec_new"), Secret("whsec_old"))


def test_an_allow_list_alone_authenticates_an_unsigned_source(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL.replace(f'token = "{TOKEN}"', 'allow_ips = ["10.1.2.0/24"]'))
    assert config.sources["finchpay"].tokens == ()
    assert config.sources["finchpay"].allow_ips == (ip_network("10.1.2.0/24"),)


def test_allow_unauthenticated_is_accepted_with_a_warning(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MINIMAL
        + """
        [sources.lifecycle-sandbox]
        adapter = "account_lifecycle"
        allow_unauthenticated = true
        """,
    )
    assert config.sources["lifecycle-sandbox"].allow_unauthenticated is True
    assert len(config.warnings) == 1
    assert "lifecycle-sandbox" in config.warnings[0]
    assert "allow_unauthenticated" in config.warnings[0]


def test_a_subscriber_no_route_names_is_a_warning(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MINIMAL
        + """
        [subscribers.spare]
        kind = "file"
        path = "spare.jsonl"
        """,
    )
    assert config.warnings == ("subscriber spare is named by no route: it receives nothing",)


def test_a_file_without_routes_is_a_warning(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL.split("[[routes]]")[0])
    assert config.routes == ()
    assert any("no [[routes]]" in warning for warning in config.warnings)


def test_port_zero_means_any_free_port(tmp_path: Path) -> None:
    assert load(tmp_path, "[server]\nport = 0\n" + MINIMAL).server.port == 0


def test_trusted_proxies_are_networks(tmp_path: Path) -> None:
    config = load(tmp_path, '[server]\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n' + MINIMAL)
    assert config.server.trusted_proxies == (ip_network("10.0.0.0/8"), ip_network("::1/128"))


# --- Interpolation --------------------------------------------------------------------------------


def test_environment_variables_are_interpolated_anywhere_in_a_string(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [server]
        host = "${HOST}"

        [sources.finfusion-main]
        adapter = "finfusion"
        secret = "whsec_${PART_ONE}${PART_TWO}"

        [sources.finchpay]
        adapter = "finchpay"
        allow_ips = ["${OFFICE}/24"]

        [subscribers.audit]
        kind = "file"
        path = "${LOG_DIR}/audit.jsonl"

        [[routes]]
        subscribers = ["audit"]
        """,
        environ={
            "HOST": "0.0.0.0",
            "PART_ONE": "abc",
            "PART_TWO": "def",
            "OFFICE": "192.0.2.0",
            "LOG_DIR": "/var/log",
        },
    )
    assert config.server.host == "0.0.0.0"
    assert config.sources["finfusion-main"].secrets == (Secret("whsec_abcdef"),)
    assert config.sources["finchpay"].allow_ips == (ip_network("192.0.2.0/24"),)
    assert config.subscribers["audit"].path == Path("/var/log/audit.jsonl")


def test_interpolation_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINRELAY_TEST_TOKEN", "from-os-environ")
    path = write(tmp_path, MINIMAL.replace(TOKEN, "${FINRELAY_TEST_TOKEN}"))
    config = load_config(path)
    assert config.sources["finchpay"].tokens == (Secret("from-os-environ"),)


def test_only_dollar_brace_name_is_special(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MINIMAL.replace(TOKEN, "$${A}-$A-${not-a-name}-${}-${B"),
        environ={"A": "x", "B": "y"},
    )
    assert config.sources["finchpay"].tokens == (Secret("$x-$A-${not-a-name}-${}-${B"),)


def test_an_interpolated_value_is_not_interpolated_again(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL.replace(TOKEN, "${A}"), environ={"A": "${B}", "B": "expanded"})
    assert config.sources["finchpay"].tokens == (Secret("${B}"),)


def test_an_unset_variable_is_one_problem_at_its_place(tmp_path: Path) -> None:
    text = """
    [sources.finfusion-main]
    adapter = "finfusion"
    secret = "${FINFUSION_SECRET}"
    """
    assert problems(tmp_path, MINIMAL + text) == [
        "sources.finfusion-main.secret: environment variable FINFUSION_SECRET is not set"
    ]


def test_each_unset_variable_in_a_string_is_reported(tmp_path: Path) -> None:
    text = MINIMAL.replace(TOKEN, "${FIRST}-${SET}-${SECOND}")
    assert problems(tmp_path, text, environ={"SET": "x"}) == [
        "sources.finchpay.token: environment variable FIRST is not set",
        "sources.finchpay.token: environment variable SECOND is not set",
    ]


def test_an_unset_variable_in_an_array_is_reported_at_its_index(tmp_path: Path) -> None:
    text = MINIMAL.replace(f'token = "{TOKEN}"', 'allow_ips = ["10.0.0.0/8", "${OFFICE_CIDR}"]')
    assert problems(tmp_path, text) == [
        "sources.finchpay.allow_ips[1]: environment variable OFFICE_CIDR is not set"
    ]


def test_an_empty_variable_is_set_but_empty(tmp_path: Path) -> None:
    text = MINIMAL.replace(TOKEN, "${EMPTY}")
    assert problems(tmp_path, text, environ={"EMPTY": ""}) == [
        "sources.finchpay.token: must not be empty"
    ]


def test_an_interpolated_value_is_named_by_its_variable_not_quoted(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace(f'token = "{TOKEN}"', 'allow_ips = ["${CIDR}"]')
        + """
        [sources.other]
        adapter = "${ADAPTER}"
        token = "t"
        """
    )
    environ = {"CIDR": "10.9.8.7/8-very-private", "ADAPTER": "adapter-value-very-private"}
    assert problems(tmp_path, text, environ) == [
        "sources.finchpay.allow_ips[0]: not an IP address or CIDR: (the value of ${CIDR})",
        f"sources.other.adapter: unknown adapter (the value of ${{ADAPTER}}) (known: {KNOWN};"
        " or describe it in [providers.<name>])",
    ]


# --- The file and its sections --------------------------------------------------------------------


def test_a_missing_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml", environ={})
    [problem] = caught.value.problems
    assert problem.place == "file"
    assert "absent.toml" in problem.message


def test_a_toml_syntax_error_is_one_problem_with_line_and_column(tmp_path: Path) -> None:
    [reported] = problems(tmp_path, '[server]\nport = 8080\nhost = "unterminated\n')
    assert reported.startswith("file: not valid TOML: ")
    assert "line 3" in reported
    assert "column" in reported


def test_a_syntax_error_does_not_quote_the_line(tmp_path: Path) -> None:
    [reported] = problems(tmp_path, f'[sources.x]\nsecret = "{PROVIDER_SECRET}" junk\n')
    assert PROVIDER_SECRET not in reported


def test_a_file_that_is_not_utf8_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert [problem.place for problem in caught.value.problems] == ["file"]


# Each case: a whole file, or a snippet appended to MINIMAL (starting with "+"), and the one
# problem it must produce, exactly.
CASES: dict[str, tuple[str, str]] = {
    # Top level
    "unknown section": (
        "+[sever]\nport = 1\n",
        'sever: unknown section (did you mean "server"?)',
    ),
    "no sources": (
        '[subscribers.audit]\nkind = "file"\npath = "a"\n[[routes]]\nsubscribers = ["audit"]\n',
        "sources: no [sources.*]: nothing can be received",
    ),
    "empty sources table": ("[sources]\n", "sources: no [sources.*]: nothing can be received"),
    "sources not a table": ("sources = 3\n", "sources: expected a table, got an integer"),
    "source not a table": (
        '+[sources]\nfinexer = "finexer"\n',
        "sources.finexer: expected a table, got a string",
    ),
    "routes as a table": (
        MINIMAL.split("[[routes]]")[0] + '[routes]\nsubscribers = ["audit"]\n',
        "routes: expected an array of tables: write [[routes]], not [routes]",
    ),
    "route not a table": (
        "routes = [1]\n" + MINIMAL.split("[[routes]]")[0],
        "routes[0]: expected a table, got an integer",
    ),
    # [server]
    "port too large": (
        "[server]\nport = 70000\n" + MINIMAL,
        "server.port: must be from 0 to 65535, not 70000",
    ),
    "port negative": (
        "[server]\nport = -1\n" + MINIMAL,
        "server.port: must be from 0 to 65535, not -1",
    ),
    "port a string": (
        '[server]\nport = "8080"\n' + MINIMAL,
        "server.port: expected an integer, got a string",
    ),
    "port a boolean": (
        "[server]\nport = true\n" + MINIMAL,
        "server.port: expected an integer, got a boolean",
    ),
    "port a float": (
        "[server]\nport = 8080.0\n" + MINIMAL,
        "server.port: expected an integer, got a float",
    ),
    "host empty": ('[server]\nhost = ""\n' + MINIMAL, "server.host: must not be empty"),
    "host not a string": (
        "[server]\nhost = 127\n" + MINIMAL,
        "server.host: expected a string, got an integer",
    ),
    "host with whitespace": (
        '[server]\nhost = "local host"\n' + MINIMAL,
        "server.host: a host name or address has no whitespace",
    ),
    "max_body_bytes zero": (
        "[server]\nmax_body_bytes = 0\n" + MINIMAL,
        "server.max_body_bytes: must be at least 1, not 0",
    ),
    "workers zero": (
        "[server]\nworkers = 0\n" + MINIMAL,
        "server.workers: must be from 1 to 64, not 0",
    ),
    "workers past the bound": (
        "[server]\nworkers = 65\n" + MINIMAL,
        "server.workers: must be from 1 to 64, not 65",
    ),
    "workers a string": (
        '[server]\nworkers = "2"\n' + MINIMAL,
        'server.workers: expected an integer or "auto", got "2"',
    ),
    "workers a float": (
        "[server]\nworkers = 2.5\n" + MINIMAL,
        "server.workers: expected an integer, got a float",
    ),
    "trusted_proxies not a list": (
        '[server]\ntrusted_proxies = "10.0.0.0/8"\n' + MINIMAL,
        "server.trusted_proxies: expected an array, got a string",
    ),
    "trusted proxy with host bits": (
        '[server]\ntrusted_proxies = ["10.0.0.1/8"]\n' + MINIMAL,
        'server.trusted_proxies[0]: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)',
    ),
    "unknown role": (
        '[server]\nrole = "delivery"\n' + MINIMAL,
        'server.role: unknown role "delivery" (did you mean "deliver"?)'
        " (supported: all, ingest, deliver)",
    ),
    "role not a string": (
        "[server]\nrole = 1\n" + MINIMAL,
        "server.role: expected a string, got an integer",
    ),
    "server key typo": (
        "[server]\nprot = 80\n" + MINIMAL,
        'server.prot: unknown key (did you mean "port"?)',
    ),
    "server not a table": ("server = 1\n" + MINIMAL, "server: expected a table, got an integer"),
    # [store]
    "in-memory store": (
        '[store]\nurl = "sqlite:///:memory:"\n' + MINIMAL,
        "store.url: an in-memory database loses every event when the process stops;"
        " give a file path: sqlite:///<path>",
    ),
    "another database's store": (
        '[store]\nurl = "mysql://gateway@db/finrelay"\n' + MINIMAL,
        "store.url: the mysql store is not supported; use sqlite:///<path> or postgresql://...",
    ),
    "postgresql without a host": (
        '[store]\nurl = "postgresql:///finrelay"\n' + MINIMAL,
        "store.url: the URL names no host: postgresql://<user>:<password>@<host>:<port>/<database>,"
        " or a socket directory as ?host=/run/postgresql",
    ),
    "postgresql with a space": (
        '[store]\nurl = "postgresql://gateway@db host/finrelay"\n' + MINIMAL,
        "store.url: not a URL: it contains whitespace or control characters (percent-encode them)",
    ),
    "postgresql with a parameter libpq does not know": (
        '[store]\nurl = "postgresql://gateway@db/finrelay?sslmod=require"\n' + MINIMAL,
        "store.url: libpq cannot read the URL: invalid URI query parameter: (...)",
    ),
    "postgresql with a port out of range": (
        '[store]\nurl = "postgres://gateway@db:65536/finrelay"\n' + MINIMAL,
        "store.url: a port is not a number from 1 to 65535",
    ),
    "postgresql in capitals": (
        '[store]\nurl = "PostgreSQL://gateway@db/finrelay"\n' + MINIMAL,
        "store.url: expected postgresql://... or postgres://... (in lower case, then //)",
    ),
    "sqlite with two slashes": (
        '[store]\nurl = "sqlite://gateway.db"\n' + MINIMAL,
        "store.url: expected sqlite:///<path> (three slashes, then the path)",
    ),
    "sqlite without a path": (
        '[store]\nurl = "sqlite:///"\n' + MINIMAL,
        "store.url: the database path is missing: sqlite:///<path>",
    ),
    "sqlite with a query": (
        '[store]\nurl = "sqlite:///gateway.db?mode=ro"\n' + MINIMAL,
        "store.url: query parameters are not supported: sqlite:///<path>",
    ),
    "store url without a scheme": (
        '[store]\nurl = "./data/gateway.db"\n' + MINIMAL,
        "store.url: expected a store URL: sqlite:///<path> or postgresql://...",
    ),
    "store key typo": (
        '[store]\nuri = "sqlite:///x.db"\n' + MINIMAL,
        'store.uri: unknown key (did you mean "url"?)',
    ),
    # [sources.*]
    "source name with a space": (
        '+[sources."bad name"]\nadapter = "finchpay"\ntoken = "t"\n',
        'sources."bad name": not a valid source name: 1 to 64 of A-Za-z0-9._- starting with a'
        " letter or digit (it appears in URLs and event ids)",
    ),
    "source name too long": (
        "+[sources." + "a" * 65 + ']\nadapter = "finchpay"\ntoken = "t"\n',
        f"sources.{'a' * 65}: not a valid source name: 1 to 64 of A-Za-z0-9._- starting with a"
        " letter or digit (it appears in URLs and event ids)",
    ),
    "source name starting with a dot": (
        '+[sources.".hidden"]\nadapter = "finchpay"\ntoken = "t"\n',
        'sources.".hidden": not a valid source name: 1 to 64 of A-Za-z0-9._- starting with a'
        " letter or digit (it appears in URLs and event ids)",
    ),
    "adapter missing": (
        '+[sources.x]\ntoken = "t"\n',
        f"sources.x.adapter: required: one of {KNOWN}",
    ),
    "adapter unknown": (
        '+[sources.x]\nadapter = "paypal"\nsecret = "s"\n',
        f'sources.x.adapter: unknown adapter "paypal" (known: {KNOWN}; or describe it in'
        " [providers.<name>])",
    ),
    "adapter misspelled": (
        '+[sources.x]\nadapter = "finfuson"\nsecret = "s"\n',
        'sources.x.adapter: unknown adapter "finfuson" (did you mean "finfusion"?) (known:'
        f" {KNOWN}; or describe it in [providers.<name>])",
    ),
    "adapter not a string": (
        "+[sources.x]\nadapter = 1\n",
        "sources.x.adapter: expected a string, got an integer",
    ),
    "signed source without secret": (
        '+[sources.finfusion]\nadapter = "finfusion"\n',
        "sources.finfusion.secret: required: finfusion signs its webhooks"
        " (or secrets = [...] during a rotation)",
    ),
    "signed source with only a token": (
        '+[sources.finaegis]\nadapter = "finaegis"\ntoken = "t"\n',
        "sources.finaegis.secret: required: finaegis signs its webhooks"
        " (or secrets = [...] during a rotation)",
    ),
    "secret and secrets": (
        '+[sources.f]\nadapter = "finfusion"\nsecret = "a"\nsecrets = ["b"]\n',
        "sources.f.secrets: set either secret or secrets, not both",
    ),
    "empty secret": (
        '+[sources.f]\nadapter = "finfusion"\nsecret = ""\n',
        "sources.f.secret: must not be empty",
    ),
    "empty secrets": (
        '+[sources.f]\nadapter = "finfusion"\nsecrets = []\n',
        "sources.f.secrets: must not be an empty array",
    ),
    "secrets with a number": (
        '+[sources.f]\nadapter = "finfusion"\nsecrets = ["a", 2]\n',
        "sources.f.secrets[1]: expected a string, got an integer",
    ),
    "unsigned source with a secret": (
        '+[sources.finchpay2]\nadapter = "finchpay"\ntoken = "t"\nsecret = "s"\n',
        "sources.finchpay2.secret: finchpay does not sign its webhooks; use token or allow_ips",
    ),
    "unsigned source with secrets": (
        '+[sources.lc]\nadapter = "account_lifecycle"\ntoken = "t"\nsecrets = ["s"]\n',
        "sources.lc.secrets: account_lifecycle does not sign its webhooks; use token or allow_ips",
    ),
    "unsigned source without token or allow_ips": (
        '+[sources.lc]\nadapter = "account_lifecycle"\n',
        "sources.lc: account_lifecycle does not sign its webhooks: set token and/or allow_ips"
        " (or allow_unauthenticated = true to accept anyone)",
    ),
    "unsigned source with an empty allow_ips": (
        '+[sources.lc]\nadapter = "account_lifecycle"\nallow_ips = []\n',
        "sources.lc: account_lifecycle does not sign its webhooks: set token and/or allow_ips"
        " (or allow_unauthenticated = true to accept anyone)",
    ),
    "allow_unauthenticated with a token": (
        '+[sources.lc]\nadapter = "account_lifecycle"\ntoken = "t"\nallow_unauthenticated = true\n',
        "sources.lc.allow_unauthenticated: contradicts token/allow_ips: requests are"
        " authenticated; remove one of them",
    ),
    "allow_unauthenticated on a signed source": (
        '+[sources.f]\nadapter = "finfusion"\nsecret = "s"\nallow_unauthenticated = true\n',
        "sources.f.allow_unauthenticated: finfusion signs its webhooks: every request is verified",
    ),
    "allow_unauthenticated not a boolean": (
        '+[sources.lc]\nadapter = "account_lifecycle"\ntoken = "t"\n'
        'allow_unauthenticated = "yes"\n',
        "sources.lc.allow_unauthenticated: expected true or false, got a string",
    ),
    "empty token": (
        '+[sources.lc]\nadapter = "account_lifecycle"\ntoken = ""\n',
        "sources.lc.token: must not be empty",
    ),
    "token and tokens": (
        '+[sources.lc]\nadapter = "account_lifecycle"\ntoken = "a"\ntokens = ["b"]\n',
        "sources.lc.tokens: set either token or tokens, not both",
    ),
    "token_param with a space": (
        '+[sources.lc]\nadapter = "account_lifecycle"\ntoken = "t"\ntoken_param = "my token"\n',
        "sources.lc.token_param: not a query parameter name: 1 to 64 of A-Za-z0-9._~-",
    ),
    "allow_ips bad entry": (
        '+[sources.lc]\nadapter = "account_lifecycle"\nallow_ips = ["10.0.0.0/8", "10.0.0.300"]\n',
        'sources.lc.allow_ips[1]: not an IP address or CIDR: "10.0.0.300"',
    ),
    "allow_ips prefix too long": (
        '+[sources.lc]\nadapter = "account_lifecycle"\nallow_ips = ["10.0.0.0/33"]\n',
        'sources.lc.allow_ips[0]: not an IP address or CIDR: "10.0.0.0/33"',
    ),
    "allow_ips not a list": (
        '+[sources.lc]\nadapter = "account_lifecycle"\nallow_ips = "10.0.0.0/8"\n',
        "sources.lc.allow_ips: expected an array, got a string",
    ),
    "tolerance zero": (
        '+[sources.f]\nadapter = "finfusion"\nsecret = "s"\ntolerance_seconds = 0\n',
        "sources.f.tolerance_seconds: must be at least 1, not 0",
    ),
    "tolerance a float": (
        '+[sources.f]\nadapter = "finfusion"\nsecret = "s"\ntolerance_seconds = 1.5\n',
        "sources.f.tolerance_seconds: expected an integer, got a float",
    ),
    "currency invalid": (
        '+[sources.lc]\nadapter = "account_lifecycle"\ntoken = "t"\ncurrency = "£"\n',
        'sources.lc.currency: not a currency code: "£" (e.g. "GBP")',
    ),
    "signature_header invalid": (
        '+[sources.fx]\nadapter = "finexer"\nsecret = "s"\nsignature_header = "fx signature"\n',
        "sources.fx.signature_header: not an HTTP header name (RFC 9110 token characters only)",
    ),
    "signature_header on another adapter": (
        '+[sources.f]\nadapter = "finfusion"\nsecret = "s"\nsignature_header = "x-sig"\n',
        "sources.f.signature_header: only finexer sources read signature_header;"
        " finfusion does not",
    ),
    "uri empty": (
        '+[sources.f]\nadapter = "finfusion"\nsecret = "s"\nuri = ""\n',
        "sources.f.uri: must not be empty",
    ),
    "uri with a space": (
        '+[sources.f]\nadapter = "finfusion"\nsecret = "s"\nuri = "my source"\n',
        "sources.f.uri: not a URI reference (RFC 3986): spaces and other characters need"
        " %-encoding",
    ),
    "source key typo": (
        '+[sources.f]\nadapter = "finfusion"\nsecret = "s"\ntolerance = 300\n',
        'sources.f.tolerance: unknown key (did you mean "tolerance_seconds"?)',
    ),
    # [subscribers.*]
    "subscriber name invalid": (
        '+[subscribers."-dash"]\nkind = "file"\npath = "x"\n[[routes]]\nsubscribers = ["-dash"]\n',
        "subscribers.-dash: not a valid subscriber name: 1 to 64 of A-Za-z0-9._- starting with"
        " a letter or digit (it appears in URLs and event ids)",
    ),
    "subscriber not a table": (
        '+[subscribers]\nledger = "http://x"\n',
        "subscribers.ledger: expected a table, got a string",
    ),
    "http subscriber without url": (
        f'+[subscribers.ledger]\nsecret = "{SUBSCRIBER_SECRET}"\n',
        'subscribers.ledger.url: required for an http subscriber (kind = "http" is the default)',
    ),
    "http subscriber with another scheme": (
        f'+[subscribers.ledger]\nurl = "ftp://files.example/x"\nsecret = "{SUBSCRIBER_SECRET}"\n',
        "subscribers.ledger.url: expected an http:// or https:// URL",
    ),
    "http subscriber url without scheme": (
        f'+[subscribers.ledger]\nurl = "ledger.example/events"\nsecret = "{SUBSCRIBER_SECRET}"\n',
        "subscribers.ledger.url: expected an http:// or https:// URL",
    ),
    "http subscriber url without host": (
        f'+[subscribers.ledger]\nurl = "http:///events"\nsecret = "{SUBSCRIBER_SECRET}"\n',
        "subscribers.ledger.url: the URL has no host",
    ),
    "http subscriber url with a bad port": (
        f'+[subscribers.ledger]\nurl = "http://x:99999/"\nsecret = "{SUBSCRIBER_SECRET}"\n',
        "subscribers.ledger.url: not a URL: the port is not a number from 0 to 65535",
    ),
    "http subscriber url with a broken IPv6 address": (
        f'+[subscribers.ledger]\nurl = "http://[::1/events"\nsecret = "{SUBSCRIBER_SECRET}"\n',
        "subscribers.ledger.url: not a URL: a malformed IPv6 address",
    ),
    "http subscriber url with a space": (
        f'+[subscribers.ledger]\nurl = "http://x/a b"\nsecret = "{SUBSCRIBER_SECRET}"\n',
        "subscribers.ledger.url: not a URL: it contains whitespace or control characters",
    ),
    "http subscriber without secret": (
        '+[subscribers.ledger]\nurl = "http://127.0.0.1:9000/events"\n',
        "subscribers.ledger.secret: required for an http subscriber: whsec_<base64>,"
        " so it can verify what it receives",
    ),
    "subscriber secret without whsec_": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\n'
        'secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2La"\n',
        "subscribers.audit2.secret: expected whsec_ followed by base64 (a Standard Webhooks"
        " secret)",
    ),
    "subscriber secret not base64": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nsecret = "whsec_not*base64!"\n',
        "subscribers.audit2.secret: the part after whsec_ is not valid base64",
    ),
    "subscriber secret too short": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nsecret = "whsec_c2hvcnQ="\n',
        "subscribers.audit2.secret: the key after whsec_ is too short: at least 16 bytes"
        " (base64 of random bytes)",
    ),
    "subscriber secrets with one bad": (
        f'+[subscribers.audit2]\nkind = "file"\npath = "a"\n'
        f'secrets = ["{SUBSCRIBER_SECRET}", "whsec_c2hvcnQ="]\n',
        "subscribers.audit2.secrets[1]: the key after whsec_ is too short: at least 16 bytes"
        " (base64 of random bytes)",
    ),
    "subscriber kind unknown": (
        '+[subscribers.mail]\nkind = "smtp"\n',
        'subscribers.mail.kind: unknown kind "smtp" (supported: http, file, redis, nats, amqp)',
    ),
    "subscriber kind misspelled": (
        '+[subscribers.mail]\nkind = "flie"\n',
        'subscribers.mail.kind: unknown kind "flie" (did you mean "file"?) (supported: http,'
        " file, redis, nats, amqp)",
    ),
    # Queue subscribers (docs/reference/queues.md): each kind its own keys and checks; URLs never
    # quoted.
    "redis subscriber without stream": (
        '+[subscribers.stream]\nkind = "redis"\nurl = "redis://127.0.0.1:6379/0"\n',
        "subscribers.stream.stream: required for a redis subscriber",
    ),
    "redis subscriber without url": (
        '+[subscribers.stream]\nkind = "redis"\nstream = "s"\n',
        "subscribers.stream.url: required for a redis subscriber: redis:// or rediss://...",
    ),
    "redis url of another scheme": (
        '+[subscribers.stream]\nkind = "redis"\nurl = "http://:pw@127.0.0.1/"\nstream = "s"\n',
        "subscribers.stream.url: expected a redis:// or rediss:// URL",
    ),
    "redis url with a database that is no number": (
        '+[subscribers.stream]\nkind = "redis"\nurl = "redis://127.0.0.1/x"\nstream = "s"\n',
        "subscribers.stream.url: the database (the URL's path) is a number, e.g. /0",
    ),
    "redis maxlen zero": (
        '+[subscribers.stream]\nkind = "redis"\nurl = "rediss://h"\nstream = "s"\nmaxlen = 0\n',
        "subscribers.stream.maxlen: must be at least 1, not 0",
    ),
    "redis maxlen not an integer": (
        '+[subscribers.stream]\nkind = "redis"\nurl = "redis://h"\nstream = "s"\nmaxlen = 1.5\n',
        "subscribers.stream.maxlen: expected an integer, got a float",
    ),
    "nats subject with a wildcard": (
        '+[subscribers.risk]\nkind = "nats"\nurl = "nats://h:4222"\nsubject = "finrelay.>"\n',
        "subscribers.risk.subject: must not contain the wildcard >: publishing needs one subject",
    ),
    "nats subject with whitespace": (
        '+[subscribers.risk]\nkind = "nats"\nurl = "tls://h"\nsubject = "a {type}"\n',
        "subscribers.risk.subject: must not contain whitespace or control characters",
    ),
    "nats subject with an unknown placeholder": (
        '+[subscribers.risk]\nkind = "nats"\nurl = "nats://h"\nsubject = "a.{kind}"\n',
        "subscribers.risk.subject: unknown placeholder {kind} (known: {type}, {source})",
    ),
    "nats subject with an empty part": (
        '+[subscribers.risk]\nkind = "nats"\nurl = "nats://h"\nsubject = "a..{type}"\n',
        "subscribers.risk.subject: an empty part: no leading, trailing or double dot",
    ),
    "nats url of the amqp scheme": (
        '+[subscribers.risk]\nkind = "nats"\nurl = "amqp://h"\nsubject = "a"\n',
        "subscribers.risk.url: expected a nats:// or tls:// URL",
    ),
    "amqp url without a host": (
        '+[subscribers.acc]\nkind = "amqp"\nurl = "amqp://guest:pw@/%2f"\nrouting_key = "{type}"\n',
        "subscribers.acc.url: the URL has no host",
    ),
    "amqp routing key with a wildcard": (
        '+[subscribers.acc]\nkind = "amqp"\nurl = "amqps://h"\nrouting_key = "payment.#"\n',
        "subscribers.acc.routing_key: must not contain the wildcard #: publishing needs one"
        " subject",
    ),
    "amqp without routing key": (
        '+[subscribers.acc]\nkind = "amqp"\nurl = "amqp://h"\n',
        'subscribers.acc.routing_key: required for an amqp subscriber (e.g. "{type}"; "" for'
        " fanout)",
    ),
    "amqp exchange name with a space": (
        '+[subscribers.acc]\nkind = "amqp"\nurl = "amqp://h"\nrouting_key = ""\nexchange = "a b"\n',
        'subscribers.acc.exchange: not an exchange name: up to 127 of A-Za-z0-9_.:- ("" is the'
        " default exchange)",
    ),
    "amqp subscriber with a stream": (
        '+[subscribers.acc]\nkind = "amqp"\nurl = "amqp://h"\nrouting_key = "k"\nstream = "s"\n',
        "subscribers.acc.stream: only redis subscribers have a stream",
    ),
    "file subscriber without path": (
        '+[subscribers.audit2]\nkind = "file"\n',
        "subscribers.audit2.path: required for a file subscriber",
    ),
    "file subscriber with a url": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nurl = "http://x/"\n',
        "subscribers.audit2.url: only http, redis, nats and amqp subscribers have a url",
    ),
    "http subscriber with a path": (
        f'+[subscribers.ledger]\nurl = "http://x/"\nsecret = "{SUBSCRIBER_SECRET}"\npath = "a"\n',
        "subscribers.ledger.path: only file subscribers have a path",
    ),
    "timeout zero": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\ntimeout_seconds = 0\n',
        "subscribers.audit2.timeout_seconds: must be more than 0 and up to 300 seconds, not 0",
    ),
    "timeout too long": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\ntimeout_seconds = 301\n',
        "subscribers.audit2.timeout_seconds: must be more than 0 and up to 300 seconds, not 301",
    ),
    "timeout nan": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\ntimeout_seconds = nan\n',
        "subscribers.audit2.timeout_seconds: must be more than 0 and up to 300 seconds, not nan",
    ),
    "timeout a string": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\ntimeout_seconds = "10"\n',
        "subscribers.audit2.timeout_seconds: expected a number of seconds, got a string",
    ),
    "retry delay negative": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nretry_schedule = [5, -1]\n',
        "subscribers.audit2.retry_schedule[1]: must be from 0 up to 86400 seconds, not -1",
    ),
    "retry delay over a day": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nretry_schedule = [86401]\n',
        "subscribers.audit2.retry_schedule[0]: must be from 0 up to 86400 seconds, not 86401",
    ),
    "retry delay infinite": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nretry_schedule = [inf]\n',
        "subscribers.audit2.retry_schedule[0]: must be from 0 up to 86400 seconds, not inf",
    ),
    "too many retries": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nretry_schedule = [' + "1, " * 21 + "]\n",
        "subscribers.audit2.retry_schedule: at most 20 retries, not 21",
    ),
    "retry schedule not a list": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nretry_schedule = 5\n',
        "subscribers.audit2.retry_schedule: expected an array, got an integer",
    ),
    "max_in_flight zero": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nmax_in_flight = 0\n',
        "subscribers.audit2.max_in_flight: must be from 1 to 10000, not 0",
    ),
    "max_in_flight too many": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nmax_in_flight = 10001\n',
        "subscribers.audit2.max_in_flight: must be from 1 to 10000, not 10001",
    ),
    "subscriber key typo": (
        '+[subscribers.audit2]\nkind = "file"\npath = "a"\nretry_shedule = [1]\n',
        'subscribers.audit2.retry_shedule: unknown key (did you mean "retry_schedule"?)',
    ),
    # [[routes]]
    "route without subscribers": (
        '+[[routes]]\nsources = ["finchpay"]\n',
        "routes[1].subscribers: required: the subscribers this route sends to",
    ),
    "route with no subscribers": (
        "+[[routes]]\nsubscribers = []\n",
        "routes[1].subscribers: must not be an empty array: a route sends to at least one"
        " subscriber",
    ),
    "route to a missing subscriber": (
        '+[subscribers.ledger]\nkind = "file"\npath = "l"\n[[routes]]\nsubscribers = ["ledgr"]\n',
        'routes[1].subscribers[0]: no subscriber named "ledgr" (did you mean "ledger"?)',
    ),
    "route to an unknown subscriber": (
        '+[[routes]]\nsubscribers = ["audit", "elsewhere"]\n',
        'routes[1].subscribers[1]: no subscriber named "elsewhere"',
    ),
    "route from a missing source": (
        '+[[routes]]\nsources = ["finchpy"]\nsubscribers = ["audit"]\n',
        'routes[1].sources[0]: no source named "finchpy" (did you mean "finchpay"?)',
    ),
    "route from no sources": (
        '+[[routes]]\nsources = []\nsubscribers = ["audit"]\n',
        "routes[1].sources: must not be an empty array (leave sources out to match every source)",
    ),
    "route type with whitespace": (
        '+[[routes]]\ntypes = ["payment.*", "payment succeeded"]\nsubscribers = ["audit"]\n',
        'routes[1].types[1]: a type pattern has no whitespace (e.g. "payment.*")',
    ),
    "route type empty": (
        '+[[routes]]\ntypes = [""]\nsubscribers = ["audit"]\n',
        "routes[1].types[0]: must not be empty",
    ),
    "route types empty": (
        '+[[routes]]\ntypes = []\nsubscribers = ["audit"]\n',
        "routes[1].types: must not be an empty array (leave types out to match every type)",
    ),
    "route key typo": (
        '+[[routes]]\nsubscribers = ["audit"]\ntype = ["payment.*"]\n',
        'routes[1].type: unknown key (did you mean "types"?)',
    ),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_each_rule_reports_its_problem_at_its_place(
    tmp_path: Path, text: str, expected: str
) -> None:
    if text.startswith("+"):
        text = MINIMAL + text[1:]
    assert problems(tmp_path, text) == [expected]


def test_a_typo_in_a_required_key_reports_both_the_typo_and_the_missing_key(
    tmp_path: Path,
) -> None:
    text = MINIMAL + '[sources.finfusion]\nadapter = "finfusion"\nsecert = "whsec_x"\n'
    assert problems(tmp_path, text) == [
        'sources.finfusion.secert: unknown key (did you mean "secret"?)',
        "sources.finfusion.secret: required: finfusion signs its webhooks"
        " (or secrets = [...] during a rotation)",
    ]


def test_every_problem_in_a_file_is_reported_in_file_order(tmp_path: Path) -> None:
    text = """
    [server]
    port = 65536
    trusted_proxies = ["nope", "10.0.0.0/8", "also-nope"]

    [store]
    url = "postgresql:///finrelay"

    [sources.finfusion]
    adapter = "finfusion"

    [sources.finchpay]
    adapter = "finchpay"
    allow_ips = ["203.0.113.0/33"]
    secert = "x"

    [sources.mystery]
    adapter = "paypal"

    [subscribers.ledger]
    url = "ftp://ledger/"
    secret = "whsec_???"

    [[routes]]
    subscribers = ["ledger"]

    [[routes]]
    sources = ["finfusion", "nobody"]
    subscribers = ["ledgr"]
    """
    assert [reported.partition(": ")[0] for reported in problems(tmp_path, text)] == [
        "server.port",
        "server.trusted_proxies[0]",
        "server.trusted_proxies[2]",
        "store.url",
        "sources.finfusion.secret",
        "sources.finchpay.secert",
        "sources.finchpay.allow_ips[0]",
        "sources.mystery.adapter",
        "subscribers.ledger.url",
        "subscribers.ledger.secret",
        "routes[1].sources[1]",
        "routes[1].subscribers[0]",
    ]


# --- Secrets never show ---------------------------------------------------------------------------


def test_no_secret_appears_in_any_problem(tmp_path: Path) -> None:
    subscriber_secrets = {
        "bad_base64": "whsec_secretvalue!!notbase64",
        "short": "whsec_c2VjcmV0dmFsdWU=",
        "no_prefix": "secretvalue-without-prefix-123",
    }
    text = f"""
    [store]
    url = "postgresql://gateway:db-password%zzsecretvalue@db/finrelay"

    [sources.finfusion]
    adapter = "finfusion"
    secret = "{PROVIDER_SECRET}"
    secrets = ["{PROVIDER_SECRET}2"]
    tolerance_seconds = -1

    [sources.finchpay]
    adapter = "finchpay"
    secret = "finchpay-secretvalue"
    token = "{TOKEN}"
    tokens = ["{TOKEN}-2"]
    allow_unauthenticated = true

    [subscribers.a]
    url = "ftp://user:password-secretvalue@ledger/"
    secret = "{subscriber_secrets["bad_base64"]}"

    [subscribers.b]
    url = "http://user:secretvalue@[::1/"
    secrets = ["{subscriber_secrets["short"]}", "{subscriber_secrets["no_prefix"]}"]

    [subscribers.c]
    url = "http://host:99999secretvalue/"
    """
    reported = problems(tmp_path, text)
    assert len(reported) >= 10
    for line in reported:
        assert "secretvalue" not in line
        assert PROVIDER_SECRET not in line
        assert TOKEN not in line


def test_no_interpolated_value_appears_in_any_problem(tmp_path: Path) -> None:
    environ = {
        "PROVIDER": "env-value-provider-0001",
        "HEADER": "env value header 0002",
        "CURRENCY": "env-value-currency-0003",
        "ROUTE_TO": "env-value-subscriber-0004",
        "KIND": "env-value-kind-0005",
        "CIDR": "env-value-cidr-0006",
        "PROXY": "10.0.0.1/8",
    }
    text = """
    [server]
    trusted_proxies = ["${PROXY}"]

    [sources.x]
    adapter = "${PROVIDER}"

    [sources.fx]
    adapter = "finexer"
    secret = "s"
    signature_header = "${HEADER}"

    [sources.lc]
    adapter = "account_lifecycle"
    currency = "${CURRENCY}"
    allow_ips = ["${CIDR}"]

    [subscribers.q]
    kind = "${KIND}"

    [[routes]]
    subscribers = ["${ROUTE_TO}"]
    """
    reported = problems(tmp_path, text, environ)
    assert len(reported) == 7
    for line in reported:
        for value in environ.values():
            assert value not in line
    assert "server.trusted_proxies[0]: (the value of ${PROXY}) has host bits set" in reported


def test_repr_of_a_config_shows_no_secret(tmp_path: Path) -> None:
    environ = {"FINFUSION_SECRET": "whsec_from_the_environment_77", "TOKEN": "env-token-88"}
    config = load(
        tmp_path,
        f"""
        [sources.finfusion]
        adapter = "finfusion"
        secrets = ["${{FINFUSION_SECRET}}", "{PROVIDER_SECRET}"]

        [sources.finchpay]
        adapter = "finchpay"
        tokens = ["${{TOKEN}}", "{TOKEN}"]

        [subscribers.ledger]
        url = "http://127.0.0.1:9000/events"
        secret = "{SUBSCRIBER_SECRET}"

        [[routes]]
        subscribers = ["ledger"]
        """,
        environ,
    )
    shown = repr(config)
    for value in (*environ.values(), PROVIDER_SECRET, TOKEN, SUBSCRIBER_SECRET):
        assert value not in shown
    assert "Secret('********')" in shown


# --- Roles and the PostgreSQL store (docs/reference/nodes.md)
# -----------------------------------------------

# Letters a URL must percent-encode, as the test cluster's (tests/postgres_server.py).
DB_PASSWORD = "pw@3f9a1c/:%"
DB_PASSWORD_ENCODED = "pw%403f9a1c%2F%3A%25"


@pytest.mark.parametrize("role", ["all", "ingest", "deliver"])
def test_server_role_is_read(tmp_path: Path, role: str) -> None:
    assert load(tmp_path, f'[server]\nrole = "{role}"\n' + MINIMAL).server.role == role


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://finrelay:{DB_PASSWORD_ENCODED}@db.internal:5432/finrelay?sslmode=verify-full",
        "postgres://finrelay@10.0.0.5/finrelay",
        "postgresql://finrelay@[::1]:5433,db2:5433/finrelay?target_session_attrs=read-write",
        "postgresql:///finrelay?host=/run/postgresql",
    ],
)
def test_a_postgresql_url_is_accepted_as_libpq_reads_it(tmp_path: Path, url: str) -> None:
    config = load(tmp_path, f'[store]\nurl = "{url}"\n' + MINIMAL)
    assert config.store.url.reveal() == url
    assert config.store.url.shared


def test_a_store_url_shows_itself_without_its_passwords(tmp_path: Path) -> None:
    url = (
        f"postgresql://finrelay:{DB_PASSWORD_ENCODED}@db.internal:5432/finrelay"
        f"?sslmode=require&password={DB_PASSWORD_ENCODED}&sslpassword=key-secret-42"
    )
    config = load(tmp_path, f'[store]\nurl = "{url}"\n' + MINIMAL)
    shown = [repr(config), str(config), repr(config.store), str(config.store.url)]
    for text in shown:
        for secret in (DB_PASSWORD, DB_PASSWORD_ENCODED, "key-secret-42"):
            assert secret not in text
    assert str(config.store.url) == (
        "postgresql://finrelay:****@db.internal:5432/finrelay"
        "?sslmode=require&password=****&sslpassword=****"
    )
    assert "StoreUrl('postgresql://finrelay:****@db.internal:5432/finrelay?" in repr(config)


def test_a_store_url_scrubs_its_password_from_any_text(tmp_path: Path) -> None:
    url = f"postgresql://finrelay:{DB_PASSWORD_ENCODED}@db/finrelay"
    config = load(tmp_path, f'[store]\nurl = "{url}"\n' + MINIMAL)
    text = f"failed: {url} (password {DB_PASSWORD}, raw {DB_PASSWORD_ENCODED})"
    assert config.store.url.scrub(text) == (
        "failed: postgresql://finrelay:****@db/finrelay (password ****, raw ****)"
    )


def test_a_store_url_from_the_environment_is_never_quoted(tmp_path: Path) -> None:
    environ = {"PGPASSWORD": DB_PASSWORD_ENCODED + "%zz"}
    reported = problems(
        tmp_path, '[store]\nurl = "postgresql://finrelay:${PGPASSWORD}@db/x"\n' + MINIMAL, environ
    )
    assert reported == [
        "store.url: libpq cannot read the URL: invalid percent-encoded token: (...)"
    ]


def test_one_run_lists_every_problem_of_every_section_and_of_one_table(tmp_path: Path) -> None:
    """check-config does not stop at a section's (or a table's) first problem: each key, and
    each element of an array, is read on its own; a missing directory is among them."""
    text = """
    [server]
    host = ""
    port = "80"
    workers = 0

    [store]
    url = "sqlite:///:memory:"
    retention_days = 0

    [sources.finchpay]
    adapter = "finchpay"
    token = "t"
    tolerance_seconds = 0
    currency = "GPB"
    allow_ips = ["10.0.0.1/8", "nope"]

    [subscribers.audit]
    kind = "file"
    path = "no-such-directory-here/audit.jsonl"
    timeout_seconds = 0
    max_in_flight = 0

    [subscribers.stream]
    kind = "redis"
    url = "http://h"
    stream = ""
    ordering = "subjects"

    [[routes]]
    types = ["payment succeeded"]
    subscribers = ["audit", "nobody"]

    [admin]
    token = " "
    """
    assert problems(tmp_path, text) == [
        "server.host: must not be empty",
        "server.port: expected an integer, got a string",
        "server.workers: must be from 1 to 64, not 0",
        "store.url: an in-memory database loses every event when the process stops; give a file"
        " path: sqlite:///<path>",
        "store.retention_days: must be more than 0 and up to 36500 days, not 0",
        "sources.finchpay.tolerance_seconds: must be at least 1, not 0",
        'sources.finchpay.currency: not an ISO 4217 currency code: "GPB" (did you mean "GBP"?)',
        'sources.finchpay.allow_ips[0]: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)',
        'sources.finchpay.allow_ips[1]: not an IP address or CIDR: "nope"',
        "subscribers.audit.timeout_seconds: must be more than 0 and up to 300 seconds, not 0",
        "subscribers.audit.max_in_flight: must be from 1 to 10000, not 0",
        "subscribers.stream.url: expected a redis:// or rediss:// URL",
        "subscribers.stream.stream: must not be empty",
        'subscribers.stream.ordering: unknown ordering "subjects" (did you mean "subject"?)'
        " (supported: subject, none)",
        'routes[0].types[0]: a type pattern has no whitespace (e.g. "payment.*")',
        'routes[0].subscribers[1]: no subscriber named "nobody"',
        "admin.token: an empty token would open the admin API to anyone",
    ]


def test_a_file_subscriber_in_a_missing_directory_is_reported_with_the_others(
    tmp_path: Path,
) -> None:
    text = MINIMAL.replace('path = "audit.jsonl"', 'path = "no-such-directory-here/a.jsonl"')
    assert problems(tmp_path, "[server]\nport = -1\n" + text) == [
        "server.port: must be from 0 to 65535, not -1",
        "subscribers.audit.path: the directory 'no-such-directory-here' does not exist (relative"
        " paths are from the working directory): serve will refuse to start",
    ]

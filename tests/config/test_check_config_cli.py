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
    # Every adapter is known: the built-ins, the presets (stripe...) and the file's providers.
    "unknown_adapter.toml": 'sources.payments.adapter: unknown adapter "strpe" (did you mean'
    ' "stripe"?) (known: account_lifecycle, ',
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
    # Providers described in the file (docs/reference/providers.md), and the sources that use them.
    "described_unknown_algorithm.toml": 'providers.ledgerly.signature.algorithm: "sha265" is not'
    ' one of sha1, sha256, sha512 (did you mean "sha256"?)',
    "described_bad_jmespath.toml": "providers.ledgerly.event.amount: not a JMESPath expression:",
    "described_type_outside_kinds.toml": 'providers.ledgerly.types."invoice.paid": "invoice.paid"'
    ' is not a canonical type: no kind "invoice" (kinds: account, transfer, payment, card,'
    " consent, transaction, workflow, system)",
    "described_url_without_public_url.toml": "sources.ledgerly.public_url: required: ledgerly"
    " signs the URL it posts to; give it as the provider calls it"
    " (e.g. https://hooks.example.com/webhooks/ledgerly)",
    "preset_url_without_public_url.toml": "sources.square-main.public_url: required: square signs"
    " the URL it posts to; give it as the provider calls it",
    "described_public_key_without_key.toml": "sources.ledgerly.public_key: required: ledgerly signs"
    " with the provider's private key; give the provider's public key (PEM)",
    "described_none_without_token.toml": "sources.ledgerly: ledgerly does not sign its webhooks:"
    " set token and/or allow_ips (or allow_unauthenticated = true to accept anyone)",
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
    assert result.stdout == "config/gateway.toml: ok (5 sources, 1 subscriber, 1 route)\n"
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


def test_the_production_example_is_valid_with_its_environment(tmp_path: Path) -> None:
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
    # Its audit log where this machine has a directory: /var/log/finrelay is the production
    # host's, and a missing one is a problem (serve would refuse to start).
    config = tmp_path / "production.toml"
    example = (REPO / "config" / "examples" / "production.toml").read_text(encoding="utf-8")
    config.write_text(example.replace("/var/log/finrelay/", f"{tmp_path}/"), encoding="utf-8")
    result = check_config("--config", str(config), **environ)
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


# Providers described in the file (docs/reference/providers.md).

LEDGERLY = """
[providers.ledgerly.signature]
scheme = "hmac"
algorithm = "sha256"
header = "X-Ledgerly-Signature"
format = "t={timestamp},v1={signature}"
signed = "{timestamp}.{body}"

[providers.ledgerly.event]
id = "id"
type = "type"
amount = "data.object.amount"

[providers.ledgerly.types]
"payment.completed" = "payment.succeeded"
"""

ROUTED = """
[subscribers.audit]
kind = "file"
path = "audit.jsonl"

[[routes]]
subscribers = ["audit"]
"""

# A real Ed25519 public key, and an RSA one (2048 bits): the wrong kind for `ed25519`.
ED25519_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----"""


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(text, encoding="utf-8")
    return config


def rsa_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_a_described_provider_and_its_source_pass(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        LEDGERLY + '[sources.ledgerly]\nadapter = "ledgerly"\nsecrets = ["a", "b"]\n' + ROUTED,
    )
    result = check_config("--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"{config}: ok (1 source, 1 subscriber, 1 route)\n"


def test_every_problem_of_a_description_is_printed_with_its_place(tmp_path: Path) -> None:
    """Each table's problems, all of them; and no "unknown adapter" for the source that names
    the broken provider (it is known, only not usable)."""
    broken = """
[providers.ledgerly.signature]
scheme = "hmac"
algorithm = "sha384"
header = "X-Ledgerly Signature"
signed = "{timestamp}.{body}"
encodng = "hex"

[providers.ledgerly.event]
type = "type"
amount = "data.object.amount[?"
amount_unit = "cents"

[providers.ledgerly.types]
"payment.completed" = "payment.suceeded"
"payout.*" = "invoice.*"
"""
    config = write(
        tmp_path,
        broken
        + '[sources.ledgerly]\nadapter = "ledgerly"\nsecret = "s"\ntolerance_seconds = 0\n'
        + '[sources.typo]\nadapter = "ledgerlyy"\nsecret = "s"\n'
        + ROUTED,
    )
    result = check_config("--config", str(config))
    assert result.returncode == 1
    lines = [line.removeprefix(f"{config}: ") for line in result.stderr.splitlines()]
    assert lines[:-1] == [
        'providers.ledgerly.signature.encodng: unknown key (did you mean "encoding"?)',
        'providers.ledgerly.signature.algorithm: "sha384" is not one of sha1, sha256, sha512',
        'providers.ledgerly.signature.header: "X-Ledgerly Signature" is not an HTTP header name'
        " (RFC 9110 token characters only)",
        "providers.ledgerly.signature.signed: has {timestamp}, but format has no {timestamp} and"
        " no timestamp_header is set",
        'providers.ledgerly.event.amount_unit: "cents" is not one of minor, major',
        "providers.ledgerly.event.amount: not a JMESPath expression: incomplete expression",
        'providers.ledgerly.types."payment.completed": "payment.suceeded" is not a canonical'
        ' type (did you mean "payment.succeeded"?)',
        'providers.ledgerly.types."payout.*": "invoice.*" is not a canonical type: no kind'
        ' "invoice" (kinds: account, transfer, payment, card, consent, transaction, workflow,'
        " system)",
        "sources.ledgerly.tolerance_seconds: must be at least 1, not 0",
    ]
    typo = lines[-1]
    assert typo.startswith(
        'sources.typo.adapter: unknown adapter "ledgerlyy" (did you mean "ledgerly"?) (known:'
        " account_lifecycle, "
    )
    assert " ledgerly, " in typo
    assert typo.endswith("; or describe it in [providers.<name>])")


def test_a_source_of_a_public_key_provider_needs_the_key_not_a_secret() -> None:
    config = relative(CONFIGS / "described_public_key_without_key.toml")
    result = check_config("--config", config)
    assert result.returncode == 1
    assert result.stderr == (
        f"{config}: sources.ledgerly.public_key: required: ledgerly signs with the provider's"
        " private key; give the provider's public key (PEM)\n"
        f"{config}: sources.ledgerly.secret: ledgerly verifies with a public key, not a secret:"
        " set public_key instead\n"
    )


def test_public_url_and_public_key_are_checked_where_they_are_read(tmp_path: Path) -> None:
    signs_url = LEDGERLY.replace('"{timestamp}.{body}"', '"{timestamp}.{url}{body}"')
    verifies_with_key = (
        LEDGERLY.replace("ledgerly", "keyly")
        .replace('scheme = "hmac"', 'scheme = "public_key"')
        .replace('"sha256"', '"ed25519"')
        .replace('format = "t={timestamp},v1={signature}"\n', 'encoding = "base64"\n')
        .replace('signed = "{timestamp}.{body}"\n', "")
    )
    config = write(
        tmp_path,
        signs_url
        + verifies_with_key
        + f"""
[sources.relative-url]
adapter = "ledgerly"
secret = "s"
public_url = "/webhooks/relative-url"

[sources.rsa-for-ed25519]
adapter = "keyly"
public_key = '''{rsa_public_key()}'''

[sources.not-pem]
adapter = "keyly"
public_key = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE="

[sources.good-key]
adapter = "keyly"
public_key = '''{ED25519_PUBLIC_KEY}'''

[sources.url-not-signed]
adapter = "stripe"
secret = "whsec_x"
public_url = "https://hooks.example.com/webhooks/url-not-signed"

[sources.key-not-read]
adapter = "stripe"
secret = "whsec_x"
public_key = '''{ED25519_PUBLIC_KEY}'''

[sources.lithic]
adapter = "lithic"
secret = "not-whsec"
"""
        + ROUTED,
    )
    result = check_config("--config", str(config))
    assert result.returncode == 1
    lines = [line.removeprefix(f"{config}: ") for line in result.stderr.splitlines()]
    assert lines == [
        "sources.relative-url.public_url: expected an absolute http:// or https:// URL: the URL"
        " as the provider calls it",
        "sources.rsa-for-ed25519.public_key: not an Ed25519 public key (the provider's algorithm"
        " is ed25519)",
        "sources.not-pem.public_key: not a PEM public key: expected -----BEGIN PUBLIC KEY-----"
        " (base64) -----END PUBLIC KEY-----",
        "sources.url-not-signed.public_url: stripe does not sign the URL it posts to: remove it",
        "sources.key-not-read.public_key: stripe does not verify with a public key (hmac):"
        " remove it",
        "sources.lithic.secret: expected whsec_ followed by base64 (the provider's key = 'whsec')",
    ]


def test_a_described_provider_cannot_open_a_source_without_a_token(tmp_path: Path) -> None:
    """`scheme = "none"` is the only way to go without a signature, and its sources are held to
    docs/reference/ingress.md as FinchPay's are: a token, an allow-list, or a warned-about
    opening."""
    unsigned = (
        '[providers.pingly.signature]\nscheme = "none"\n[providers.pingly.event]\ntype = "t"\n'
    )
    config = write(
        tmp_path,
        unsigned
        + '[sources.signed]\nadapter = "pingly"\nsecret = "s"\n'
        + '[sources.open]\nadapter = "pingly"\nallow_unauthenticated = true\n'
        + '[sources.walled]\nadapter = "pingly"\nallow_ips = ["203.0.113.0/24"]\n'
        + ROUTED,
    )
    result = check_config("--config", str(config))
    assert result.returncode == 1
    assert result.stderr == (
        f"{config}: sources.signed.secret: pingly does not sign its webhooks; use token or"
        " allow_ips\n"
        f"{config}: sources.signed: pingly does not sign its webhooks: set token and/or"
        " allow_ips (or allow_unauthenticated = true to accept anyone)\n"
    )
    fixed = write(tmp_path, config.read_text().replace('secret = "s"', 'token = "t0ken"'))
    result = check_config("--config", str(fixed))
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"{fixed}: warning: source open accepts unauthenticated requests"
        " (allow_unauthenticated = true): anyone who can reach POST /webhooks/open can inject"
        " events\n"
    )


def test_a_signed_described_provider_needs_a_secret_and_cannot_be_opened(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        LEDGERLY
        + '[sources.ledgerly]\nadapter = "ledgerly"\ntoken = "t0ken"\n'
        + "allow_unauthenticated = true\n"
        + ROUTED,
    )
    result = check_config("--config", str(config))
    assert result.returncode == 1
    assert result.stderr == (
        f"{config}: sources.ledgerly.secret: required: ledgerly signs its webhooks (or secrets ="
        " [...] during a rotation)\n"
        f"{config}: sources.ledgerly.allow_unauthenticated: ledgerly signs its webhooks: every"
        " request is verified\n"
    )


def test_a_described_provider_with_a_builtins_name_is_a_warning(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        LEDGERLY.replace("ledgerly", "finfusion")
        + '[sources.ff]\nadapter = "finfusion"\nsecret = "s"\n'
        + ROUTED,
    )
    result = check_config("--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"{config}: warning: providers.finfusion: replaces the built-in finfusion adapter for"
        " every source that names it\n"
    )


def test_a_provider_name_must_fit_an_event_type(tmp_path: Path) -> None:
    config = write(tmp_path, LEDGERLY.replace("ledgerly", '"Ledger.ly"') + ROUTED)
    result = check_config("--config", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f'{config}: providers."Ledger.ly": not a valid provider name: 1 to 64 of a-z0-9_-'
        " starting with a letter (its unmapped events are typed <name>.<provider type>)\n"
    )


def test_an_unset_variable_in_a_description_is_its_only_problem(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        LEDGERLY.replace('"X-Ledgerly-Signature"', '"${FINRELAY_TEST_UNSET_HEADER}"')
        + '[sources.ledgerly]\nadapter = "ledgerly"\nsecret = "s"\n'
        + ROUTED,
    )
    result = check_config("--config", str(config))
    assert result.returncode == 1
    assert result.stderr == (
        f"{config}: providers.ledgerly.signature.header: environment variable"
        " FINRELAY_TEST_UNSET_HEADER is not set\n"
    )


def file_subscriber_config(tmp_path: Path, path: str, store: str | None = None) -> Path:
    store_table = f'[store]\nurl = "{store}"\n' if store else ""
    return write(
        tmp_path,
        store_table + '[sources.finchpay]\nadapter = "finchpay"\ntoken = "t0ken"\n'
        f'[subscribers.audit]\nkind = "file"\npath = "{path}"\n'
        '[[routes]]\nsubscribers = ["audit"]\n',
    )


def test_a_file_subscriber_in_a_missing_directory_is_a_problem(tmp_path: Path) -> None:
    # Relative to the working directory (the repository here), as serve reads it: the same
    # directory next to the config file does not count. serve refuses to start without it, so
    # check-config does not say ok.
    (tmp_path / "no-such-dir").mkdir()
    config = file_subscriber_config(tmp_path, "no-such-dir/audit.jsonl")
    result = check_config("--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: subscribers.audit.path: the directory 'no-such-dir' does not exist (relative"
        " paths are from the working directory): serve will refuse to start"
    ]
    assert result.stdout == ""


def test_a_file_subscriber_in_a_read_only_directory_is_warned_of(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    (tmp_path / "read-only").mkdir(mode=0o500)
    config = file_subscriber_config(tmp_path, f"{tmp_path}/read-only/audit.jsonl")
    result = check_config("--config", str(config))
    assert "subscribers.audit.path: the directory" in result.stderr
    assert "is not writable: serve will refuse to start" in result.stderr


def test_a_file_subscriber_beside_the_sqlite_store_needs_no_directory_yet(tmp_path: Path) -> None:
    # serve opens the store first, which makes its directory (./data for the default config).
    config = file_subscriber_config(
        tmp_path, f"{tmp_path}/state/audit.jsonl", store=f"sqlite:///{tmp_path}/state/gateway.db"
    )
    result = check_config("--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert not (tmp_path / "state").exists()  # checking creates nothing


def test_a_weak_admin_token_is_a_warning_that_does_not_quote_it(tmp_path: Path) -> None:
    config = file_subscriber_config(tmp_path, f"{tmp_path}/audit.jsonl")
    config.write_text(config.read_text() + '[admin]\ntoken = "hunter2"\n', encoding="utf-8")
    result = check_config("--config", str(config))
    assert result.returncode == 0, result.stderr
    [warning] = result.stderr.splitlines()
    assert warning.startswith(f"{config}: warning: admin.token: too weak")
    assert "hunter2" not in result.stdout + result.stderr

"""Queue subscribers without a broker: the config's tagged union, the registry, URL masking and
the `{type}` / `{source}` templates (docs/reference/queues.md, configuration.md)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.broker_url import BrokerUrl, masked_url
from gateway.config import (
    AmqpSubscriber,
    ConfigError,
    FileSubscriber,
    HttpSubscriber,
    NatsSubscriber,
    RedisSubscriber,
    load_config,
)
from gateway.delivery.amqp import AmqpTransport
from gateway.delivery.connecting import SharedConnect
from gateway.delivery.file import FileTransport
from gateway.delivery.http import HttpTransport
from gateway.delivery.nats_jetstream import NatsJetStreamTransport
from gateway.delivery.redis_streams import RedisStreamsTransport
from gateway.delivery.registry import build_transport
from gateway.delivery.templates import render_template, sanitize, template_problem

REPO = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).parent / "configs"

EVERY_KIND = """
[sources.finchpay]
adapter = "finchpay"
token = "t"

[subscribers.ledger]
url = "https://ledger.example/events"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

[subscribers.audit]
kind = "file"
path = "./data/audit.jsonl"

[subscribers.ledger-stream]
kind = "redis"
url = "redis://:redis-password-1@127.0.0.1:6379/0"
stream = "finrelay:events"
maxlen = 1000000

[subscribers.risk]
kind = "nats"
url = "nats://nats-user:nats-password-2@127.0.0.1:4222"
subject = "finrelay.{type}"

[subscribers.accounting]
kind = "amqp"
url = "amqp://guest:amqp-password-3@127.0.0.1:5672/%2f"
exchange = "finrelay"
routing_key = "{source}.{type}"

[[routes]]
subscribers = ["ledger", "audit", "ledger-stream", "risk", "accounting"]
"""
PASSWORDS = ("redis-password-1", "nats-password-2", "amqp-password-3")


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_config(path, environ={})


def test_each_kind_is_its_own_struct_with_its_own_keys(tmp_path: Path) -> None:
    config = _load(tmp_path, EVERY_KIND)
    subscribers = config.subscribers  # type: ignore[attr-defined]
    assert isinstance(subscribers["ledger"], HttpSubscriber)
    assert isinstance(subscribers["audit"], FileSubscriber)
    redis_subscriber = subscribers["ledger-stream"]
    assert isinstance(redis_subscriber, RedisSubscriber)
    assert (redis_subscriber.kind, redis_subscriber.stream, redis_subscriber.maxlen) == (
        "redis",
        "finrelay:events",
        1000000,
    )
    assert redis_subscriber.url.reveal() == "redis://:redis-password-1@127.0.0.1:6379/0"
    nats_subscriber = subscribers["risk"]
    assert isinstance(nats_subscriber, NatsSubscriber)
    assert nats_subscriber.subject == "finrelay.{type}"
    amqp_subscriber = subscribers["accounting"]
    assert isinstance(amqp_subscriber, AmqpSubscriber)
    assert (amqp_subscriber.exchange, amqp_subscriber.routing_key) == (
        "finrelay",
        "{source}.{type}",
    )
    # Queue subscribers need no secret; they take the delivery keys with their defaults.
    assert amqp_subscriber.secrets == ()
    assert amqp_subscriber.max_in_flight == 64


def test_the_registry_builds_the_transport_each_kind_names(tmp_path: Path) -> None:
    config = _load(tmp_path, EVERY_KIND)
    expected = {
        "ledger": HttpTransport,
        "audit": FileTransport,
        "ledger-stream": RedisStreamsTransport,
        "risk": NatsJetStreamTransport,
        "accounting": AmqpTransport,
    }
    for name, subscriber in config.subscribers.items():  # type: ignore[attr-defined]
        assert type(build_transport(subscriber)) is expected[name]


def test_no_password_is_in_the_repr_of_the_config(tmp_path: Path) -> None:
    shown = repr(_load(tmp_path, EVERY_KIND))
    for password in PASSWORDS:
        assert password not in shown
    assert "amqp://guest:****@127.0.0.1:5672/%2f" in shown
    assert "redis://:****@127.0.0.1:6379/0" in shown


def test_check_config_never_prints_a_broker_password(tmp_path: Path) -> None:
    broken = EVERY_KIND.replace('stream = "finrelay:events"', "").replace("@127.0.0.1:5672", "@")
    path = tmp_path / "gateway.toml"
    path.write_text(broken)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "subscribers.ledger-stream.stream: required for a redis subscriber" in result.stderr
    assert "subscribers.accounting.url: the URL has no host" in result.stderr
    for password in PASSWORDS:
        assert password not in result.stderr + result.stdout


def test_a_broker_url_is_never_quoted_in_a_problem(tmp_path: Path) -> None:
    text = EVERY_KIND.replace("nats://nats-user", "ftp://nats-user")
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert str(caught.value) == "subscribers.risk.url: expected a nats:// or tls:// URL"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:secret@rabbit:5672/%2f", "amqp://guest:****@rabbit:5672/%2f"),
        ("redis://:secret@127.0.0.1:6379/0", "redis://:****@127.0.0.1:6379/0"),
        ("rediss://default:secret@cache.example/1", "rediss://default:****@cache.example/1"),
        ("nats://a-bare-token@127.0.0.1:4222", "nats://****@127.0.0.1:4222"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("amqps://u:p%40ss@[::1]:5671/vh", "amqps://u:****@[::1]:5671/vh"),
        ("amqp://u:secret@host:99999/", "****"),  # unparseable: masked whole
    ],
)
def test_masked_url_hides_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_a_broker_url_shows_itself_masked() -> None:
    url = BrokerUrl("amqp://guest:secret@rabbit/%2f")
    assert "secret" not in repr(url)
    assert "secret" not in str(url)
    assert "secret" not in f"{url}"
    assert url.reveal() == "amqp://guest:secret@rabbit/%2f"


@pytest.mark.parametrize(
    ("value", "sanitized"),
    [
        ("payment.succeeded", "payment.succeeded"),
        ("finexer.account.updated", "finexer.account.updated"),
        ("finfusion-main", "finfusion-main"),
        ("a*b.>", "a_b._"),
        ("a..b", "a._.b"),
        (".", "_._"),
        ("", "_"),
        ("zahlung.bestätigt", "zahlung.best_tigt"),  # a character, not a byte: one `_`
        ("a b#c", "a_b_c"),
    ],
)
def test_sanitize_keeps_dots_and_makes_every_part_a_plain_token(value: str, sanitized: str) -> None:
    assert sanitize(value) == sanitized


def test_templates_render_type_and_source() -> None:
    assert render_template("finrelay.{type}", "payment.succeeded", "x") == (
        "finrelay.payment.succeeded"
    )
    assert render_template("{source}.{type}", "a*", "finfusion main") == "finfusion_main.a_"
    assert render_template("fixed", "payment.succeeded", "x") == "fixed"


@given(st.text(max_size=30), st.text(max_size=30))
def test_a_rendered_template_never_has_a_wildcard_or_an_empty_part(
    event_type: str, source: str
) -> None:
    subject = render_template("finrelay.{source}.{type}", event_type, source)
    assert not set(subject) & set("*>#{} \t\r\n")
    assert "" not in subject.split(".")


@pytest.mark.parametrize(
    ("template", "wildcards", "problem"),
    [
        ("finrelay.{type}", "*>", None),
        ("{source}.{type}", "*#", None),
        ("finrelay.*", "*>", "must not contain the wildcard *: publishing needs one subject"),
        ("a.{typ}", "*>", "unknown placeholder {typ} (known: {type}, {source})"),
        ("a.{type", "*>", "an unmatched { or } (placeholders are {type} and {source})"),
        ("a b", "*#", "must not contain whitespace or control characters"),
    ],
)
def test_template_problems(template: str, wildcards: str, problem: str | None) -> None:
    assert template_problem(template, wildcards, empty_parts=False) == problem


def test_the_queues_example_is_valid_with_its_environment() -> None:
    environ = {
        "FINFUSION_SECRET": "whsec_ZW52LXNlY3JldC1mb3ItdGhlLWNsaS10ZXN0",
        "FINCHPAY_TOKEN": "token",
        "REDIS_PASSWORD": "redis-password",
        "NATS_PASSWORD": "nats-password",
        "RABBITMQ_PASSWORD": "rabbitmq-password",
        "QUEUE_SIGNING_SECRET": "whsec_ZW52LXNlY3JldC1mb3ItdGhlLWNsaS10ZXN0",
    }
    config = load_config(REPO / "config/examples/queues.toml", environ=environ)
    kinds = {name: subscriber.kind for name, subscriber in config.subscribers.items()}
    assert kinds == {"ledger-stream": "redis", "risk": "nats", "accounting": "amqp"}
    assert "rabbitmq-password" not in repr(config)


def test_sends_waiting_on_a_failing_connection_attempt_share_its_failure() -> None:
    attempts = 0

    async def refused() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        raise ConnectionRefusedError

    async def scenario() -> list[BaseException | str]:
        connect = SharedConnect[str]()
        together = await asyncio.gather(
            *(connect.get(lambda: None, refused) for _ in range(64)), return_exceptions=True
        )
        assert attempts == 1  # one attempt for the 64 sends that needed it at once
        with pytest.raises(ConnectionRefusedError):
            await connect.get(lambda: None, refused)  # a later send tries again
        assert attempts == 2

        async def accepted() -> str:
            return "connection"

        assert await connect.get(lambda: None, accepted) == "connection"
        return together

    results = asyncio.run(scenario())
    assert all(isinstance(result, ConnectionRefusedError) for result in results)

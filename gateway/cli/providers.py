"""The commands over providers and their payloads: `normalize` prints the canonical event a
payload becomes, `sample` posts a signed sample webhook, `providers` lists the adapters a source
may name, `check-config` validates the config that describes them."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec

from adapters.base import Adapter
from adapters.described.samples import DescribedSamples
from adapters.errors import AdapterError
from adapters.presets import PRESETS
from adapters.registry import ADAPTERS
from adapters.samples import SampleError, known_types, sample_body
from adapters.source import SourceSettings
from gateway.cli.command import CONFIG, Command, argument, config_path, timestamp
from gateway.cli.context import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, command_config, plural
from gateway.config import shipped_adapters
from schemas.event import CanonicalEvent, encode_event
from schemas.money import MoneyError, normalize_currency_code


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    return name.strip().lower(), value.strip()


def _currency(text: str) -> str:
    try:
        return normalize_currency_code(text)
    except MoneyError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _error_line(code: str, detail: str) -> bytes:
    return msgspec.json.encode({"error": code, "detail": detail}) + b"\n"


def _unknown_adapter(name: str, adapters: Mapping[str, Adapter]) -> str:
    matches = difflib.get_close_matches(name, list(adapters), n=1)
    hint = f' (did you mean "{matches[0]}"?)' if matches else ""
    return f"no adapter named {name!r}{hint} (known: {', '.join(sorted(adapters))})"


def run_normalize(args: argparse.Namespace) -> int:
    """Print the canonical event a payload becomes (each one, for a batch provider); no
    signature check, and no config unless --config names one for its `[providers.*]`."""
    if args.config is None:
        adapters: Mapping[str, Adapter] = shipped_adapters()
    else:
        adapters = command_config(args.config).adapters
    adapter = adapters.get(args.adapter)
    if adapter is None:
        sys.stderr.buffer.write(
            _error_line("unknown_adapter", _unknown_adapter(args.adapter, adapters))
        )
        return EXIT_USAGE
    try:
        body = sys.stdin.buffer.read() if args.file in (None, "-") else Path(args.file).read_bytes()
    except OSError as error:
        sys.stderr.buffer.write(_error_line("unreadable_file", f"{args.file}: {error.strerror}"))
        return EXIT_USAGE
    settings = SourceSettings(
        name=args.source or adapter.name, adapter=adapter.name, currency=args.currency
    )
    received_at = args.received_at or datetime.now(UTC)
    try:
        events = adapter.normalize_all(body, dict(args.header), settings, received_at, "none")
    except AdapterError as error:
        sys.stderr.buffer.write(_error_line(error.code, error.detail))
        return EXIT_USAGE
    for event in events:
        encoded = encode_event(event)
        # The exact bytes a subscriber would receive with --compact (one event a line);
        # indented for a person otherwise.
        output = encoded if args.compact else msgspec.json.format(encoded, indent=2)
        sys.stdout.buffer.write(output + b"\n")
    return EXIT_OK


def run_providers(args: argparse.Namespace) -> int:
    """List every adapter a source of the config may name: built-in, preset, or described in
    the config's `[providers.*]`, with its signature scheme."""
    config = command_config(args.config)
    for name in sorted(config.adapters):
        adapter = config.adapters[name]
        if args.json:
            line = msgspec.json.encode(
                {"name": name, "origin": adapter.origin, "scheme": adapter.scheme}
            ).decode()
        else:
            line = f"{name}\t{adapter.origin}\t{adapter.scheme}"
        print(line)
    return EXIT_OK


def run_check_config(args: argparse.Namespace) -> int:
    """Validate a config file: every problem on its own line, with its place; exit 1 if any."""
    config = command_config(args.config)
    for warning in config.warnings:
        print(f"{args.config}: warning: {warning}", file=sys.stderr)
    print(
        f"{args.config}: ok ({plural(len(config.sources), 'source')},"
        f" {plural(len(config.subscribers), 'subscriber')},"
        f" {plural(len(config.routes), 'route')})"
    )
    return EXIT_OK


def run_sample(args: argparse.Namespace) -> int:
    """Post a correctly signed (or tokened) sample webhook of an adapter to a URL."""
    config = command_config(args.config)
    adapter = config.adapters.get(args.adapter)
    if adapter is None:
        print(_unknown_adapter(args.adapter, config.adapters), file=sys.stderr)
        return EXIT_USAGE
    source = next((s for s in config.sources.values() if s.adapter == adapter.name), None)
    url = args.to
    if url is None:
        if source is None:
            print(f"no source uses {adapter.name} in {args.config}: give --to", file=sys.stderr)
            return EXIT_USAGE
        url = f"http://{config.server.host}:{config.server.port}"
    url = _webhook_url(url, source.name if source else adapter.name)
    credentials = source.secrets if adapter.signed and source else source.tokens if source else ()
    secret = args.secret or (credentials[0].reveal() if credentials else None)
    if secret is None:
        if adapter.scheme == "public_key":
            # The source holds the provider's public key: only the provider can sign.
            print(
                f"{adapter.name} signs with the provider's private key: give one (PEM) with"
                " --secret",
                file=sys.stderr,
            )
        else:
            print("no secret or token to sign with: give --secret", file=sys.stderr)
        return EXIT_USAGE

    now = datetime.now(UTC)
    try:
        body = (
            adapter.sample(args.type, now)
            if adapter.sample is not None
            else sample_body(adapter.name, args.type, now)
        )
    except SampleError as error:
        print(f"no sample of {adapter.name}: {error}", file=sys.stderr)
        return EXIT_USAGE
    _say_if_unmapped(adapter, body, source)
    headers = {"content-type": "application/json"}
    params: dict[str, str] = {}
    if adapter.signed:
        # A scheme that signs the URL signs the one the provider is told (the source's
        # public_url), else the one posted to.
        signing = source or SourceSettings(name=adapter.name, adapter=adapter.name)
        if signing.public_url is None:
            signing = msgspec.structs.replace(signing, public_url=url)
        try:
            headers.update(adapter.sign_for_source(body, secret, now, signing))
        except ValueError as error:  # says what the key is not, never the key
            print(f"cannot sign a sample of {adapter.name}: {error}", file=sys.stderr)
            return EXIT_USAGE
        if source is not None and source.tokens:
            # A signed source may also want its token (docs/reference/ingress.md: both are checked).
            params[source.token_param] = source.tokens[0].reveal()
    else:
        params[source.token_param if source else "token"] = secret
    import httpx

    try:
        response = httpx.post(url, content=body, headers=headers, params=params, timeout=10)
    except httpx.HTTPError as error:
        print(f"cannot post to {url}: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"POST {url} -> {response.status_code} {response.text}")
    return EXIT_OK if response.is_success else EXIT_PROBLEMS


def _say_if_unmapped(adapter: Adapter, body: bytes, source: SourceSettings | None) -> None:
    """A hint on stderr when the sample's type is one the adapter has no canonical type for:
    the gateway accepts it all the same, as `<adapter>.<provider type>` of kind unmapped."""
    settings = source or SourceSettings(name=adapter.name, adapter=adapter.name)
    try:
        events: list[CanonicalEvent] = adapter.normalize_all(
            body, {}, settings, datetime.now(UTC), "none"
        )
    except AdapterError:
        return  # the gateway says what is wrong with it, in its answer
    for event in events:
        if event.data.kind == "unmapped":
            known = _known_types(adapter)
            print(
                f"note: {adapter.name} has no canonical type for {event.providertype!r}: it is"
                f" stored unmapped, as {event.type}"
                + (f" (types it knows: {', '.join(known)})" if known else ""),
                file=sys.stderr,
            )


def _known_types(adapter: Adapter) -> tuple[str, ...]:
    """The provider types an adapter maps: a built-in's table, or a described provider's."""
    if isinstance(adapter.sample, DescribedSamples):
        return adapter.sample.known_types()
    return known_types(adapter.name) if adapter.origin == "builtin" else ()


def _webhook_url(url: str, source: str) -> str:
    """`url` as given when it has a path; a bare base URL (`http://127.0.0.1:8090`) gets the
    source's webhook path."""
    parts = urlsplit(url)
    if parts.path.strip("/"):
        return url
    return urlunsplit(parts._replace(path=f"/webhooks/{source}"))


def _adapters_help() -> str:
    # argparse formats `%` itself: none of these names has one.
    return (
        f"a built-in adapter ({', '.join(sorted(ADAPTERS))}), a preset"
        f" ({', '.join(sorted(PRESETS))}), or a provider the config describes"
    )


ADAPTER = argument("adapter", metavar="ADAPTER", help=_adapters_help())

NORMALIZE = Command(
    "normalize",
    run_normalize,
    summary="print the canonical event a provider payload becomes",
    description=(
        "Print the canonical event a payload becomes. Reads no config and checks no "
        "signature; `verification` is `none`. Exit 2 with the typed error on stderr when "
        "the payload is invalid."
    ),
    arguments=(
        ADAPTER,
        argument("file", nargs="?", metavar="FILE", help="the body; stdin when absent"),
        argument(
            "--header",
            action="append",
            type=_header,
            default=[],
            metavar="NAME:VALUE",
            help="a request header the adapter reads (repeatable), e.g. X-Webhook-Event:x.y",
        ),
        argument("--source", help="the source name (default: the adapter's name)"),
        argument("--currency", type=_currency, help="the source's default currency setting"),
        argument("--received-at", type=timestamp, help="the receive time (default: now), ISO 8601"),
        argument(
            "--compact",
            action="store_true",
            help="print the exact bytes, not indented (one event a line)",
        ),
        # Not CONFIG: without this option normalize reads no config at all.
        argument(
            "--config",
            type=config_path,
            metavar="FILE",
            help="also know the providers this config file describes ([providers.*]); an"
            " extension of the contract, whose normalize reads no config (and without this"
            " option it reads none: not even $GATEWAY_CONFIG)",
        ),
    ),
)

PROVIDERS = Command(
    "providers",
    run_providers,
    summary="list the adapters a source may name, with their signature schemes",
    description=(
        "List every adapter a source may name: built-in, preset, or described in the "
        "config's [providers.*] (which replaces a preset or built-in of its name); one a "
        "line: name, origin (builtin, preset or config), signature scheme."
    ),
    arguments=(
        argument(
            "--json",
            action="store_true",
            help="JSON lines (name, origin, scheme), not tab-separated",
        ),
        CONFIG,
    ),
)

CHECK_CONFIG = Command(
    "check-config",
    run_check_config,
    summary="validate a config file",
    description="Report every problem of a config file with its place; exit 1 if any.",
    arguments=(CONFIG,),
)

SAMPLE = Command(
    "sample",
    run_sample,
    summary="post a correctly signed sample provider webhook",
    description=(
        "Post a sample webhook of ADAPTER, signed (or tokened) as the provider would, to the "
        "gateway. TYPE is the provider's type or a canonical type; one the adapter does "
        "not know is posted all the same, and stored unmapped."
    ),
    arguments=(
        ADAPTER,
        argument(
            "type",
            nargs="?",
            metavar="TYPE",
            help="a provider or canonical type (default: a typical one)",
        ),
        argument(
            "--to", metavar="URL", help="where to post (default: this config's source for ADAPTER)"
        ),
        argument(
            "--secret",
            help="signing secret or token (default: the source's, from the config); for a"
            " public_key scheme, the provider's private key (PEM)",
        ),
        CONFIG,
    ),
)

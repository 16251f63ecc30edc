"""The `gateway` command line (CONTRACT.md 6).

Each command is a small function of parsed arguments returning an exit code; argparse does the
rest. Exit codes: 0 done, 1 the command ran and found problems, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from adapters.errors import AdapterError
from adapters.registry import ADAPTERS
from adapters.source import SourceSettings
from schemas.event import encode_event
from schemas.money import MoneyError, normalize_currency_code
from schemas.timestamps import TimestampError, parse_timestamp

__all__ = ["main"]

EXIT_OK = 0
EXIT_USAGE = 2


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


def _time(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except TimestampError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _error_line(code: str, detail: str) -> bytes:
    return msgspec.json.encode({"error": code, "detail": detail}) + b"\n"


def run_normalize(args: argparse.Namespace) -> int:
    """Print the canonical event a payload becomes; no config, no signature check."""
    adapter = ADAPTERS[args.adapter]
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
        event = adapter.normalize(body, dict(args.header), settings, received_at, "none")
    except AdapterError as error:
        sys.stderr.buffer.write(_error_line(error.code, error.detail))
        return EXIT_USAGE
    encoded = encode_event(event)
    # The exact bytes a subscriber would receive with --compact; indented for a person otherwise.
    output = encoded if args.compact else msgspec.json.format(encoded, indent=2)
    sys.stdout.buffer.write(output + b"\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="finrelay: provider webhooks in, one canonical CloudEvents envelope out.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    normalize = commands.add_parser(
        "normalize",
        help="print the canonical event a provider payload becomes",
        description=(
            "Print the canonical event a payload becomes. Reads no config and checks no "
            "signature; `verification` is `none`. Exit 2 with the typed error on stderr when "
            "the payload is invalid."
        ),
    )
    normalize.add_argument("adapter", choices=sorted(ADAPTERS), metavar="ADAPTER")
    normalize.add_argument("file", nargs="?", metavar="FILE", help="the body; stdin when absent")
    normalize.add_argument(
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="NAME:VALUE",
        help="a request header the adapter reads (repeatable), e.g. X-Webhook-Event:x.y",
    )
    normalize.add_argument("--source", help="the source name (default: the adapter's name)")
    normalize.add_argument(
        "--currency", type=_currency, help="the source's default currency setting"
    )
    normalize.add_argument(
        "--received-at", type=_time, help="the receive time (default: now), ISO 8601"
    )
    normalize.add_argument(
        "--compact", action="store_true", help="print the exact bytes, not indented"
    )
    normalize.set_defaults(handler=run_normalize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    code: int = handler(args)
    return code

"""The `gateway` command line (docs/reference/cli.md).

Each command is a small function of parsed arguments returning an exit code, declared as a
`Command` beside it; argparse does the rest. Exit codes: 0 done, 1 the command ran and found
problems (the store unavailable, or its schema newer than this gateway, included), 2 bad input
or usage; `serve` also 3 (the app failed to start: a store schema newer than this gateway is one
case) and 4 (cannot listen on the address).

    context.py      what every command shares: its config, its store, its tracing
    command.py      a command as a value, for argparse
    serve.py        serve, migrate
    providers.py    normalize, providers, check-config, sample
    quarantine.py   reprocess, quarantine
    keys.py         new-secret, public-key
    deliveries.py   dead-letters, redrive, replay, enable
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.cli.context import EXIT_PROBLEMS, CommandRefused
from gateway.cli.deliveries import DEAD_LETTERS, ENABLE, REDRIVE, REPLAY
from gateway.cli.keys import NEW_SECRET, PUBLIC_KEY
from gateway.cli.providers import CHECK_CONFIG, NORMALIZE, PROVIDERS, SAMPLE
from gateway.cli.quarantine import QUARANTINE, REPROCESS
from gateway.cli.serve import MIGRATE, SERVE

__all__ = ["build_parser", "main", "program_name"]

# The names the one CLI is installed under (pyproject.toml's [project.scripts]): `finrelay` is
# what a user types after `pip install finrelay`, as the generic `gateway` may be taken on PATH.
PROGRAM_NAMES = ("gateway", "finrelay")

# In the order `gateway --help` lists them.
COMMANDS = (
    NORMALIZE,
    PROVIDERS,
    CHECK_CONFIG,
    SERVE,
    MIGRATE,
    REPROCESS,
    QUARANTINE,
    NEW_SECRET,
    SAMPLE,
    DEAD_LETTERS,
    REDRIVE,
    REPLAY,
    ENABLE,
    PUBLIC_KEY,
)


def program_name(argv0: str) -> str:
    """The name help and usage say: `finrelay` when called so, else `gateway` (`python -m
    gateway` has `__main__.py` as argv[0])."""
    called = Path(argv0).stem  # `finrelay.exe` on Windows
    return called if called in PROGRAM_NAMES else "gateway"


def build_parser(prog: str = "gateway") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="finrelay: provider webhooks in, one canonical CloudEvents envelope out.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"finrelay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_to(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(program_name(sys.argv[0])).parse_args(argv)
    handler = args.handler
    try:
        code: int = handler(args)
    except CommandRefused as refused:
        for line in refused.lines:
            print(line, file=sys.stderr)
        return EXIT_PROBLEMS
    return code

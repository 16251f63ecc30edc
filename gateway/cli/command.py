"""A command as a value: its name, what it runs, its help and its arguments. `build_parser`
adds each to argparse in the order `gateway --help` lists them."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.config import DEFAULT_CONFIG_PATH
from schemas.timestamps import TimestampError, parse_timestamp


@dataclass(frozen=True)
class Argument:
    """One `add_argument` call: a positional's name or an option's flags, and its settings."""

    names: tuple[str, ...]
    settings: Mapping[str, Any]


def argument(*names: str, **settings: Any) -> Argument:
    return Argument(names, settings)


@dataclass(frozen=True)
class Command:
    name: str
    run: Callable[[argparse.Namespace], int]
    summary: str  # what `gateway --help` says of it
    description: str  # what `gateway NAME --help` says
    arguments: tuple[Argument, ...] = ()

    def add_to(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        parser = commands.add_parser(self.name, help=self.summary, description=self.description)
        for each in self.arguments:
            settings = dict(each.settings)
            if each is CONFIG:
                # Read when the parser is built, as a test or a process manager may set it.
                default = os.environ.get("GATEWAY_CONFIG") or str(DEFAULT_CONFIG_PATH)
                settings["default"] = Path(default)
            parser.add_argument(*each.names, **settings)
        parser.set_defaults(handler=self.run)


def config_path(text: str) -> Path:
    return Path(text)


# `--config FILE`, which every command but normalize takes (docs/reference/cli.md); its default,
# $GATEWAY_CONFIG else config/gateway.toml, is filled in by `Command.add_to`.
CONFIG = argument(
    "--config",
    type=config_path,
    metavar="FILE",
    help=f"the config file (default: $GATEWAY_CONFIG, else {DEFAULT_CONFIG_PATH})",
)


def timestamp(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except TimestampError as error:
        raise argparse.ArgumentTypeError(str(error)) from None

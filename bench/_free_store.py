"""`gateway serve` with a store whose `accept` writes nothing and answers "accepted" at once.

An experiment, not a way to run the gateway: it measures the ceiling of one gateway process
(HTTP, adapters, metrics, logs) when storing costs nothing, and nothing is ever delivered.
`bench/profile.py --free-store` starts it. One process only (`--workers 1`):
the patch is made in this process, and other processes would start fresh interpreters without
it.

    python bench/_free_store.py --config FILE --port P
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.cli import main
from gateway.store.base import AcceptOutcome, NewEvent
from gateway.store.sqlite import SQLiteStore


async def _accept_nothing(self: SQLiteStore, event: NewEvent) -> AcceptOutcome:
    return "accepted"


if __name__ == "__main__":
    SQLiteStore.accept = _accept_nothing  # type: ignore[method-assign]
    sys.exit(main(["serve", *sys.argv[1:], "--workers", "1"]))

"""The commands over deliveries: `dead-letters` lists those that gave up, `redrive` re-queues
them, `replay` sends a stored event again, `enable` lets a disabled subscriber receive again.
Each calls one operation of `gateway/operations/`, as the admin API does."""

from __future__ import annotations

import argparse
import sys

import msgspec

from gateway.cli.command import CONFIG, Command, argument, timestamp
from gateway.cli.context import (
    EXIT_OK,
    EXIT_PROBLEMS,
    command_config,
    plural,
    with_store,
    with_traced_store,
)
from gateway.operations.dead_letters import DeadLetterItem, list_dead_letters, redrive
from gateway.operations.paging import MAX_LIMIT
from gateway.operations.replay import replay
from gateway.operations.subscribers import enable
from gateway.store import Store


def run_dead_letters(args: argparse.Namespace) -> int:
    """List dead letters: event id, subscriber, attempts, when it died, last error (tab-separated
    under a header line, or JSON lines)."""
    config = command_config(args.config, subscriber=args.subscriber)
    letters = with_store(config, lambda store: _every_dead_letter(store, args.subscriber))
    if not args.json:
        # The --json field names, so a column reads the same in either form.
        print("event_id\tsubscriber\tattempts\tdead_at\tlast_error")
    for letter in letters:
        if args.json:
            line = msgspec.json.encode(letter).decode()
        else:
            error = (letter.last_error or "").replace("\t", " ").replace("\n", " ")
            line = (
                f"{letter.event_id}\t{letter.subscriber}\t{letter.attempts}\t{letter.dead_at}"
                f"\t{error}"
            )
        print(line)
    return EXIT_OK


async def _every_dead_letter(store: Store, subscriber: str | None) -> list[DeadLetterItem]:
    """Every dead letter, oldest first: the admin API's pages, walked to the end."""
    letters: list[DeadLetterItem] = []
    cursor: str | None = None
    while True:
        page = await list_dead_letters(store, subscriber=subscriber, limit=MAX_LIMIT, cursor=cursor)
        letters += page.items
        cursor = page.next_cursor
        if cursor is None:
            return letters[::-1]


def run_redrive(args: argparse.Namespace) -> int:
    """Re-queue dead letters: all, one subscriber's, or those that died in a time window."""
    config = command_config(args.config, subscriber=args.subscriber)
    since = None if args.since is None else args.since.timestamp()
    until = None if args.until is None else args.until.timestamp()
    count = with_traced_store(
        config,
        lambda store, tracing: redrive(
            store, config, subscriber=args.subscriber, since=since, until=until, tracing=tracing
        ),
    )
    print(f"redriven: {count}")
    return EXIT_OK


def run_replay(args: argparse.Namespace) -> int:
    """Send a stored event again, to one subscriber or to every one it was delivered to that
    the config names; those it does not name are said on stderr. Exit 1 when there is no such
    event, or when it was replayed to no subscriber at all."""
    config = command_config(args.config, subscriber=args.subscriber)
    targets = None if args.subscriber is None else [args.subscriber]
    done = with_traced_store(
        config,
        lambda store, tracing: replay(store, config, args.event_id, targets, tracing=tracing),
    )
    if done is None:
        print(f"no stored event {args.event_id!r}", file=sys.stderr)
        return EXIT_PROBLEMS
    # The deliveries of a gateway that reads another config than this command did (the
    # default file, say): said, never skipped in silence.
    skipped = [item.subscriber for item in done.not_replayed]
    if skipped:
        lead = "warning: " if done.replayed else "nothing replayed: "
        print(
            f"{lead}{args.event_id} not replayed to {', '.join(skipped)}: not"
            f" {'a subscriber' if len(skipped) == 1 else 'subscribers'} in {args.config}, the"
            " config this command read (give the config of the gateway that delivered it"
            " with --config)",
            file=sys.stderr,
        )
    elif not done.replayed:
        print(
            f"nothing replayed: {args.event_id} has no deliveries (no route selected a"
            " subscriber for it); name one with --subscriber",
            file=sys.stderr,
        )
    if not done.replayed:
        return EXIT_PROBLEMS
    print(f"replayed {args.event_id} to {plural(len(done.replayed), 'subscriber')}")
    return EXIT_OK


def run_enable(args: argparse.Namespace) -> int:
    """Re-enable a subscriber disabled by a 410 Gone (or close an open circuit now)."""
    config = command_config(args.config, subscriber=args.subscriber)
    with_store(config, lambda store: enable(store, config, args.subscriber))
    print(f"enabled {args.subscriber}")
    return EXIT_OK


ONLY_SUBSCRIBER = argument("--subscriber", metavar="NAME", help="only this subscriber's")

DEAD_LETTERS = Command(
    "dead-letters",
    run_dead_letters,
    summary="list dead letters",
    description=(
        "One dead letter a line, newest last, under a header: event id, subscriber, "
        "attempts (every one recorded, before a redrive too), when it died (RFC 3339), "
        "last error."
    ),
    arguments=(
        argument("--json", action="store_true", help="JSON lines instead of tab-separated"),
        ONLY_SUBSCRIBER,
        CONFIG,
    ),
)

REDRIVE = Command(
    "redrive",
    run_redrive,
    summary="re-queue dead letters",
    description="Make dead letters pending again, with a fresh retry schedule.",
    arguments=(
        ONLY_SUBSCRIBER,
        argument(
            "--since",
            type=timestamp,
            metavar="T",
            help="died at or after T: RFC 3339 (2026-12-07T16:00:00Z; no offset means UTC) or"
            " Unix seconds",
        ),
        argument("--until", type=timestamp, metavar="T", help="died at or before T (as --since)"),
        CONFIG,
    ),
)

REPLAY = Command(
    "replay",
    run_replay,
    summary="send a stored event again",
    description=(
        "Send a stored event again, due now with a fresh retry schedule: to every "
        "subscriber it was delivered to that this config names, or with --subscriber to "
        "that one. Its subscribers the config does not name are listed on stderr. Exit 1 "
        "when there is no such event, or when it was replayed to none."
    ),
    arguments=(
        argument("event_id", metavar="EVENT_ID"),
        argument(
            "--subscriber", metavar="NAME", help="only to this subscriber (any configured one)"
        ),
        CONFIG,
    ),
)

ENABLE = Command(
    "enable",
    run_enable,
    summary="re-enable a subscriber that answered 410 Gone (or close its circuit)",
    description=(
        "Re-enable a subscriber the gateway disabled after it answered 410 Gone, and close "
        "its circuit if open: its waiting deliveries are sent again from now."
    ),
    arguments=(argument("subscriber", metavar="NAME"), CONFIG),
)

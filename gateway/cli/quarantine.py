"""The commands over quarantined payloads: `quarantine` lists them, prints one's body or drops
one; `reprocess` runs them all through their adapters again."""

from __future__ import annotations

import argparse
import sys

import msgspec

from gateway.cli.command import CONFIG, Command, argument
from gateway.cli.context import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, command_config, with_store
from gateway.operations.quarantine import drop_quarantined, list_quarantine, quarantined_payload
from gateway.reprocess import reprocess_quarantine

QUARANTINE_ACTIONS = ("show", "drop")


def run_reprocess(args: argparse.Namespace) -> int:
    """Quarantined payloads through their adapters again; exit 1 if some are still invalid."""
    config = command_config(args.config)
    report = with_store(config, lambda store: reprocess_quarantine(config, store, print))
    print(
        f"reprocessed: {report.accepted} accepted, {report.duplicate} duplicate, "
        f"{report.still_invalid} still invalid, {report.skipped} skipped"
    )
    return EXIT_PROBLEMS if report.still_invalid or report.skipped else EXIT_OK


def run_quarantine(args: argparse.Namespace) -> int:
    """List the payloads waiting in quarantine, print one's body (`quarantine show ID`), or drop
    one (`quarantine drop ID`)."""
    action: str | None = args.action
    if action is not None and action not in QUARANTINE_ACTIONS:
        # `quarantine 2` is the likely slip: say both things that can be done with an ID.
        subject = action if action.isdigit() else "ID"
        print(
            f"quarantine: no action {action!r}: `quarantine show {subject}` prints a quarantined"
            f" body, `quarantine drop {subject}` deletes it for good",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if action is not None and args.quarantine_id is None:
        verb = "show" if action == "show" else "drop"
        print(f"quarantine {action}: give the ID of the payload to {verb}", file=sys.stderr)
        return EXIT_USAGE
    config = command_config(args.config)
    if action == "show":
        shown_id: int = args.quarantine_id
        payload = with_store(config, lambda store: quarantined_payload(store, shown_id))
        if payload is None:
            print(f"no quarantined payload with id {shown_id}", file=sys.stderr)
            return EXIT_PROBLEMS
        # The body exactly as received: what `reprocess` will read again.
        sys.stdout.buffer.write(payload.body)
        sys.stdout.buffer.flush()
        return EXIT_OK
    if action == "drop":
        quarantine_id: int = args.quarantine_id
        if not with_store(config, lambda store: drop_quarantined(store, quarantine_id)):
            print(f"no quarantined payload with id {quarantine_id}", file=sys.stderr)
            return EXIT_PROBLEMS
        print(f"dropped quarantined payload {quarantine_id}")
        return EXIT_OK
    for item in with_store(config, list_quarantine):
        if args.json:
            print(msgspec.json.encode(item).decode())
        else:
            error = item.error.replace("\t", " ").replace("\n", " ")
            print(f"{item.id}\t{item.source}\t{item.received_at}\t{error}")
    return EXIT_OK


REPROCESS = Command(
    "reprocess",
    run_reprocess,
    summary="run quarantined payloads through their adapters again",
    description=(
        "Run every quarantined payload through its adapter again: one that now reads is "
        "stored and routed, one that does not stays in quarantine with the new reason. "
        "Exit 0 when every payload was released, 1 when some are still invalid or were "
        "skipped (their source is no longer configured)."
    ),
    arguments=(CONFIG,),
)

QUARANTINE = Command(
    "quarantine",
    run_quarantine,
    summary="list quarantined payloads, show one's body, or drop one",
    description=(
        "List the payloads waiting in quarantine (id, source, received, error); with "
        "`show ID` print one's body as it was received; with `drop ID` delete one for good "
        "(exit 1 when there is no such payload waiting)."
    ),
    arguments=(
        # Not `choices`: argparse's answer to `quarantine 2` ("invalid choice") does not say
        # that an ID comes after the action; run_quarantine does.
        argument(
            "action",
            nargs="?",
            metavar="ACTION",
            help="show (print the body) or drop (delete it); none: list them all",
        ),
        argument(
            "quarantine_id", nargs="?", type=int, metavar="ID", help="a payload's id, as listed"
        ),
        argument(
            "--json",
            action="store_true",
            help="JSON lines (id, source, received_at, verification, error), not tab-separated",
        ),
        CONFIG,
    ),
)

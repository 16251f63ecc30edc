"""Ordered delivery per subject (docs/reference/ordering.md): its cost, as a ratio to unordered
delivery of the same events to the same subscriber in the same run.

Each run starts from a fresh store filled through the gateway's own store API (as ingest leaves
it: every event with one delivery to "sink", due now), then `gateway serve` drains it into the
verifying subscriber of bench/_servers.py (a separate process). Rate: events the subscriber
verified / the time from its first arrival to its last, so neither start-up nor ingest counts.

  1. unordered: --events FinFusion events over --subjects subjects (event i is about subject
     i mod --subjects, so each subject's events are spread over the whole backlog), to a
     subscriber without `ordering`;
  2. ordered: the same events to a subscriber with `ordering = "subject"`: at most one event per
     subject under way, each released by the one before it;
  3. one subject: --single events all about one subject, ordered: one at a time, so the rate is
     one round trip per event (record the answer, claim the next, send it); printed as both.

Ratio = ordered / unordered; the aim is >= 80%.

    .venv/bin/python bench/ordering.py            # 20,000 events over 2,000 subjects
    .venv/bin/python bench/ordering.py --quick    # 4,000 over 400, about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.registry import ADAPTERS
from adapters.samples import sample_body
from adapters.source import SourceSettings
from bench._common import (
    add_workers_option,
    code_changed_note,
    exit_on_sigterm,
    gateway_config,
    gateway_service,
    get_json,
    http_subscriber,
    machine_line,
    new_subscriber_secret,
    scratch,
    subscriber_service,
)
from gateway.store.base import NewEvent
from gateway.store.sqlite import SQLiteStore
from schemas.event import encode_event

SOURCE = "finfusion"
IN_FLIGHT = 64


def make_events(count: int, subjects: int) -> list[NewEvent]:
    """`count` distinct FinFusion events, event i about payment `pay_<i mod subjects>`."""
    now = datetime.now(UTC)
    settings = SourceSettings(name=SOURCE, adapter=SOURCE)
    template = json.loads(sample_body(SOURCE, "payment.succeeded", now))
    events = []
    for index in range(count):
        template["id"] = f"evt_bench_{index:08d}"
        template["data"]["object"]["id"] = f"pay_{index % subjects:06d}"
        body = json.dumps(template).encode()
        canonical = ADAPTERS[SOURCE].normalize(body, {}, settings, now, "signature")
        events.append(
            NewEvent(
                id=canonical.id,
                source=SOURCE,
                type=canonical.type,
                received_at=now.timestamp(),
                body=encode_event(canonical),
                subscribers=("sink",),
                subject=canonical.subject or None,
            )
        )
    return events


async def prefill(database: Path, events: Sequence[NewEvent], ordered: bool) -> None:
    store = SQLiteStore(database)
    await store.open()
    try:
        ordered_to = ("sink",) if ordered else ()
        for start in range(0, len(events), 2_000):
            chunk = events[start : start + 2_000]
            await asyncio.gather(
                *(store.accept(msgspec.structs.replace(e, ordered=ordered_to)) for e in chunk)
            )
    finally:
        await store.close()


def drain_rate(
    events: Sequence[NewEvent], *, ordered: bool, work: Path, workers: int, secret: str
) -> float:
    """Events/s from the subscriber's first verified arrival to its last."""
    # The gateway's store is ./data/gateway.db in its working directory.
    (work / "gateway" / "data").mkdir(parents=True)
    asyncio.run(prefill(work / "gateway" / "data" / "gateway.db", events, ordered))
    subscriber = subscriber_service(work / "subscriber", secret)
    (work / "subscriber").mkdir()
    subscriber.start()
    try:
        sink = http_subscriber(
            f"{subscriber.url}/events", secret, max_in_flight=IN_FLIGHT, timeout_seconds=30
        )
        if ordered:
            sink += '\nordering = "subject"'
        gateway = gateway_service(work / "gateway", gateway_config(sink), workers=workers)
        gateway.start()
        try:
            deadline = time.monotonic() + 1_800
            while time.monotonic() < deadline:
                stats = get_json(f"{subscriber.url}/stats")
                if stats["unique"] >= len(events):
                    if stats["failed"] or stats["refused"]:
                        raise RuntimeError(f"the subscriber refused some: {stats}")
                    span = stats["last_arrival"] - stats["first_arrival"]
                    verified: float = (stats["unique"] - 1) / max(span, 1e-6)
                    return verified
                time.sleep(0.05)
            raise RuntimeError(f"not delivered in time: {stats}")
        finally:
            gateway.stop()
    finally:
        subscriber.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subjects", type=int, default=2_000)
    parser.add_argument("--single", type=int, default=500, help="events of the one subject")
    parser.add_argument("--quick", action="store_true", help="4,000 events over 400 subjects")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    add_workers_option(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.subjects, args.single = 4_000, 400, 200
    exit_on_sigterm()
    header = machine_line("ordering")
    print(header)
    print(
        f"# {args.events} events over {args.subjects} subjects, {IN_FLIGHT} in flight,"
        f" gateway workers {args.workers}; one subject: {args.single} events"
    )
    secret = new_subscriber_secret()
    events = make_events(args.events, args.subjects)
    single = make_events(args.single, 1)
    with scratch(args.keep, "ordering") as work:

        def rate(batch: Sequence[NewEvent], ordered: bool, name: str) -> float:
            return drain_rate(
                batch, ordered=ordered, work=work / name, workers=args.workers, secret=secret
            )

        unordered = rate(events, False, "unordered")
        print(f"unordered     {unordered:8.0f} events/s", flush=True)
        ordered = rate(events, True, "ordered")
        print(
            f"ordered       {ordered:8.0f} events/s   ratio {ordered / unordered:5.0%}", flush=True
        )
        one = rate(single, True, "single")
        print(
            f"one subject   {one:8.0f} events/s   {1000 / one:.1f} ms per event"
            " (one round trip: record, release, claim, send)",
            flush=True,
        )
    print(f"# ratio ordered / unordered {ordered / unordered:.0%} (aim: 80% or more)")
    note = code_changed_note(header.rsplit("code ", 1)[1])
    if note:
        print(f"# {note}")


if __name__ == "__main__":
    main()

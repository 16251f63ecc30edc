"""One page of `GET /admin/api/events` on a store of 1,000,000 events (issue 15).

Fills a temporary SQLite store through the store's own `accept` (group commit, 10,000 writes in
flight at a time), each event with one pending delivery as after an outage, then times the
admin API's handler (in process, over httpx's ASGI transport: no socket, no server) for the
first page and a page deep in the walk (a cursor 90% of the way down), with and without
filters. Baseline in the same run: the same first page as one bare SQL statement on the same
file (no deliveries, no JSON).

    .venv/bin/python bench/admin_events.py                 # 1,000,000 events
    .venv/bin/python bench/admin_events.py --events 200000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import structlog

from adapters.registry import ADAPTERS
from adapters.samples import sample_body
from adapters.source import Secret, SourceSettings
from bench._common import LIFECYCLE_CURRENCY, SOURCES, machine_line, scratch
from gateway.admin.api import AdminApi
from gateway.config import AdminConfig, FileSubscriber, GatewayConfig
from gateway.operations.paging import encode_cursor
from gateway.store.base import NewEvent
from gateway.store.sqlite import SQLiteStore
from schemas.event import encode_event

TOKEN = "bench-admin-token-5d1f"
IN_FLIGHT = 10_000
REPEATS = 7
# Provider types per source: a mix of statuses (failed ones are about 1 in 8).
TYPES = {
    "finaegis": ["transfer.completed", "transfer.failed", "account.created"],
    "finexer": ["payment.completed", "payment.failed", "consent.authorised"],
    "finfusion": ["payment.succeeded", "payment.failed", "payment.refunded"],
    "finchpay": ["COMPLETE", "ERROR", "PROCESSING"],
    "account_lifecycle": ["ACCOUNT_CREDITED", "TRANSACTION_CONFIRMED", "ACCOUNT_CREATED"],
}


def templates() -> list[tuple[str, str, bytes, str | None]]:
    """(source, canonical type, canonical bytes, data.status) per provider type: events are
    copies of these under new ids and subjects (the bytes are what a page reads and sends)."""
    now = datetime.now(UTC)
    made = []
    for source in SOURCES:
        adapter = ADAPTERS[source]
        for provider_type in TYPES[source]:
            settings = SourceSettings(name=source, adapter=source, currency=LIFECYCLE_CURRENCY)
            event = adapter.normalize(sample_body(source, provider_type, now), {}, settings, now)
            made.append((source, event.type, encode_event(event), event.data.status))
    return made


async def fill(store: SQLiteStore, count: int) -> float:
    kinds = templates()
    started = time.perf_counter()
    base = time.time() - count / 1000  # 1,000 events a second, ending now
    for start in range(0, count, IN_FLIGHT):
        batch = []
        for index in range(start, min(count, start + IN_FLIGHT)):
            source, event_type, body, status = kinds[(index * 7) % len(kinds)]
            batch.append(
                store.accept(
                    NewEvent(
                        id=f"evt_{index:026d}",
                        source=source,
                        type=event_type,
                        received_at=base + index / 1000,
                        body=body,
                        subscribers=("ledger",),
                        subject=f"pay_{index}",
                        status=status,
                    )
                )
            )
        await asyncio.gather(*batch)
        if start and start % 100_000 == 0:
            print(f"# {start:,} events stored", file=sys.stderr)
    return time.perf_counter() - started


async def timed(client: httpx.AsyncClient, query: str, repeats: int = REPEATS) -> tuple[float, int]:
    """Median milliseconds of GET /events?<query>, and how many items it answered."""
    times = []
    items = 0
    for _ in range(repeats):
        started = time.perf_counter()
        answer = await client.get(f"/events?{query}")
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text
        items = len(answer.json()["items"])
    return statistics.median(times), items


def bare_first_page(database: Path) -> float:
    with sqlite3.connect(database) as db:
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            db.execute(
                "SELECT id, source, type, subject, received_at, body FROM events"
                " ORDER BY received_at DESC, id DESC LIMIT 50"
            ).fetchall()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)


async def measure(workdir: Path, count: int) -> None:
    database = workdir / "gateway.db"
    store = SQLiteStore(database)
    await store.open()
    try:
        seconds = await fill(store, count)
        print(f"stored {count:,} events in {seconds:.0f} s ({count / seconds:,.0f}/s)")
        with sqlite3.connect(database) as db:
            received_at, event_id = db.execute(
                "SELECT received_at, id FROM events ORDER BY received_at DESC, id DESC"
                " LIMIT 1 OFFSET ?",
                (count * 9 // 10,),
            ).fetchone()
        deep = encode_cursor((received_at, event_id))
        config = GatewayConfig(
            admin=AdminConfig(tokens=(Secret(TOKEN),)),
            subscribers={"ledger": FileSubscriber(name="ledger", path=Path("/dev/null"))},
        )
        transport = httpx.ASGITransport(app=AdminApi(config, store))
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://admin",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            baseline = bare_first_page(database)
            print(f"baseline: the first 50 rows as one bare SQL statement: {baseline:.2f} ms")
            print(f"{'filter':<34} {'first page':>12} {'deep page':>12}  (ms, median of {REPEATS})")
            for name, query in (
                ("none (limit 50)", "limit=50"),
                ("none (limit 500)", "limit=500"),
                ("status=failed", "status=failed"),
                ("source=finchpay", "source=finchpay"),
                ("type=payment.*", "type=payment.*"),
                ("type=*.failed&source=finexer", "type=*.failed&source=finexer"),
                (f"subject=pay_{count // 3}", f"subject=pay_{count // 3}"),
                ("since/until: a 60 s window", _window(received_at)),
            ):
                first, items = await timed(client, query)
                deep_ms, deep_items = await timed(client, f"{query}&cursor={deep}")
                print(
                    f"{name:<34} {first:>9.2f} ms {deep_ms:>9.2f} ms"
                    f"  ({items} / {deep_items} items)"
                )
            worst, _ = await timed(client, "source=nobody", repeats=1)
            print(f"{'source=nobody (matches nothing)':<34} {worst:>9.2f} ms  (walks every event)")
    finally:
        await store.close()


def _window(received_at: float) -> str:
    return f"since={received_at - 60}&until={received_at}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    args = parser.parse_args()
    # The API's per-request log lines are not what is measured here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print(machine_line("admin_events.py"))
    with scratch(args.keep, "admin-bench") as workdir:
        asyncio.run(measure(workdir, args.events))


if __name__ == "__main__":
    main()

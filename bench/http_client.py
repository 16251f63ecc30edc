"""The HTTP subscriber's client: httpx on its own connection pool against the gateway's
transport (gateway/delivery/http.py: httpx on aiohttp's pool), sending the same deliveries.

Both run in this process on uvloop, as in the gateway, against the verifying bench subscriber
(bench/_servers.py) in its own process; interleaved rounds, medians. For each: CPU seconds of
this process per request (the figure that matters: delivery shares the gateway's event loop)
and requests per second, and the gateway transport's ratio to plain httpx.

    .venv/bin/python bench/http_client.py             # 5 rounds of 3,000 requests, 64 at a time
    .venv/bin/python bench/http_client.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvloop

from bench._common import (
    canonical_requests,
    code_changed_note,
    code_version,
    exit_on_sigterm,
    machine_line,
    median,
    new_subscriber_secret,
    scratch,
    subscriber_service,
)
from gateway.delivery.http import HttpTransport
from gateway.delivery.transport import OutboundMessage


class PooledClient:
    """httpx as it comes: one client, httpcore's pool of `connections` connections (the
    gateway's transport until 538d3ac)."""

    def __init__(self, url: str, connections: int) -> None:
        self.url = url
        self._client = httpx.AsyncClient(
            timeout=10,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def send(self, message: OutboundMessage) -> None:
        headers = {
            "content-type": "application/cloudevents+json",
            "webhook-id": message.webhook_id,
            "webhook-timestamp": str(message.webhook_timestamp),
            "webhook-signature": message.webhook_signature or "",
        }
        response = await self._client.post(self.url, content=message.body, headers=headers)
        response.raise_for_status()

    async def close(self) -> None:
        await self._client.aclose()


class GatewayClient:
    """The gateway's transport, failing loudly on anything but delivered."""

    def __init__(self, url: str, connections: int) -> None:
        self._transport = HttpTransport(url, 10.0, connections)

    async def send(self, message: OutboundMessage) -> None:
        result = await self._transport.send(message)
        if result.outcome != "delivered":
            raise RuntimeError(f"not delivered: {result.error}")

    async def close(self) -> None:
        await self._transport.close()


def messages(count: int, secret: str) -> list[OutboundMessage]:
    """Signed deliveries, as the gateway would send them (bench/_common.canonical_requests)."""
    found = []
    for raw in canonical_requests(count, secret):
        head, body = raw.split(b"\r\n\r\n", 1)
        headers = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
        found.append(
            OutboundMessage(
                webhook_id=headers["webhook-id"],
                webhook_timestamp=int(headers["webhook-timestamp"]),
                webhook_signature=headers["webhook-signature"],
                body=body,
            )
        )
    return found


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def round_of(
    kind: str, url: str, batch: list[OutboundMessage], concurrency: int
) -> tuple[float, float]:
    """(CPU seconds per request, requests per second) of one client over `batch`."""
    client = PooledClient(url, concurrency) if kind == "httpx" else GatewayClient(url, concurrency)
    limit = asyncio.Semaphore(concurrency)

    async def one(message: OutboundMessage) -> None:
        async with limit:
            await client.send(message)

    try:
        await one(batch[0])  # one connection up before the clock starts
        cpu_before, started = cpu(), time.perf_counter()
        await asyncio.gather(*(one(message) for message in batch[1:]))
        elapsed = time.perf_counter() - started
        used = cpu() - cpu_before
    finally:
        await client.close()
    sent = len(batch) - 1
    return used / sent, sent / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000, help="per client per round")
    parser.add_argument("--concurrency", type=int, default=64, help="as max_in_flight")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 1, 500
    exit_on_sigterm()
    code = code_version()
    print(machine_line("http_client.py"))
    print(
        f"# {args.rounds} rounds, each: {args.requests} signed deliveries to the verifying"
        f" subscriber, {args.concurrency} at a time, through (httpx) one httpx client with"
        f" {args.concurrency} connections, then (gateway) the gateway's HttpTransport"
    )
    figures: dict[str, list[tuple[float, float]]] = {"httpx": [], "gateway": []}
    with scratch(args.keep, "http-client") as root:
        secret = new_subscriber_secret()
        subscriber = subscriber_service(root / "subscriber", secret).start()
        try:
            url = f"{subscriber.url}/events"
            print(f"\n{'round':<7}{'client':<9}{'cpu us/request':>16}{'requests/s':>12}")
            for number in range(1, args.rounds + 1):
                batch = messages(args.requests, secret)  # signed now: valid for 5 minutes
                for kind in ("httpx", "gateway"):
                    result = uvloop.run(round_of(kind, url, batch, args.concurrency))
                    figures[kind].append(result)
                    print(f"{number:<7}{kind:<9}{result[0] * 1e6:>16.0f}{result[1]:>12.0f}")
        finally:
            subscriber.stop()
    httpx_cpu = median([cpu_used for cpu_used, _ in figures["httpx"]])
    gateway_cpu = median([cpu_used for cpu_used, _ in figures["gateway"]])
    httpx_rate = median([rate for _, rate in figures["httpx"]])
    gateway_rate = median([rate for _, rate in figures["gateway"]])
    print(
        f"\nmedian  httpx {httpx_cpu * 1e6:.0f} us/request, {httpx_rate:.0f}/s;"
        f" gateway {gateway_cpu * 1e6:.0f} us/request, {gateway_rate:.0f}/s"
    )
    print(
        f"gateway / httpx: CPU per request {gateway_cpu / httpx_cpu:.2f}x,"
        f" requests/s {gateway_rate / httpx_rate:.2f}x"
    )
    changed = code_changed_note(code)
    if changed:
        print(f"# note: {changed}")


if __name__ == "__main__":
    main()

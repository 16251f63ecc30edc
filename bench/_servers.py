"""The servers the benchmarks start as separate processes (not benchmarks themselves).

    python bench/_servers.py bare --port P
        A bare Starlette app on uvicorn (uvloop, httptools, one worker): `POST /webhooks/{source}`
        reads the body and answers 200. The bound of the stack the gateway is built on.

    python bench/_servers.py subscriber --port P --secret whsec_... [--mode 200|503]
        A Standard Webhooks subscriber: `POST /events` verifies every request with the
        `standardwebhooks` package (v1 HMAC, timestamp within 5 min, JSON body) and checks the
        body's `id` is the `webhook-id`; it records the arrival time (time.time()) of the first
        copy of each id. `--mode 503` answers 503 to everything (an outage) until
        `POST /mode` with body `200`. `GET /stats` gives counters, `GET /records` the
        {webhook-id: arrival time} map.

Both answer `GET /readyz`, and run as `uvicorn.run(app, loop="uvloop", http="httptools",
log_level="warning", access_log=False)`.
"""

from __future__ import annotations

import argparse
import time

import msgspec
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_OK = b'{"status":"accepted"}'
_JSON = "application/json"


async def readyz(request: Request) -> Response:
    return Response(b'{"status":"ready"}', media_type=_JSON)


def bare_app() -> Starlette:
    async def webhook(request: Request) -> Response:
        await request.body()
        return Response(_OK, media_type=_JSON)

    return Starlette(
        routes=[
            Route("/webhooks/{source}", webhook, methods=["POST"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


class _Stats(msgspec.Struct):
    received: int = 0  # requests to /events
    verified: int = 0  # signature and body good (duplicates included)
    failed: int = 0  # verification failed
    refused: int = 0  # answered with the outage status
    unique: int = 0  # distinct webhook-ids verified
    duplicates: int = 0  # verified again after the first copy
    first_arrival: float = 0.0
    last_arrival: float = 0.0


def subscriber_app(secret: str, mode: int) -> Starlette:
    verifier = Webhook(secret)
    stats = _Stats()
    arrivals: dict[str, float] = {}
    state = {"mode": mode}

    async def events(request: Request) -> Response:
        body = await request.body()
        arrived = time.time()
        stats.received += 1
        if state["mode"] != 200:
            stats.refused += 1
            return Response(b"", status_code=state["mode"])
        try:
            payload = verifier.verify(body, dict(request.headers))
            webhook_id = request.headers["webhook-id"]
            if not isinstance(payload, dict) or payload.get("id") != webhook_id:
                raise WebhookVerificationError("the body's id is not the webhook-id")
        except (WebhookVerificationError, KeyError, ValueError):
            stats.failed += 1
            return Response(b"", status_code=400)
        stats.verified += 1
        if webhook_id in arrivals:
            stats.duplicates += 1
        else:
            arrivals[webhook_id] = arrived
            stats.unique += 1
            stats.first_arrival = stats.first_arrival or arrived
        stats.last_arrival = arrived
        return Response(b"", status_code=204)

    async def get_stats(request: Request) -> Response:
        return Response(msgspec.json.encode(stats), media_type=_JSON)

    async def get_records(request: Request) -> Response:
        return Response(msgspec.json.encode(arrivals), media_type=_JSON)

    async def set_mode(request: Request) -> Response:
        state["mode"] = int(await request.body())
        return Response(b"", status_code=204)

    return Starlette(
        routes=[
            Route("/events", events, methods=["POST"]),
            Route("/stats", get_stats, methods=["GET"]),
            Route("/records", get_records, methods=["GET"]),
            Route("/mode", set_mode, methods=["POST"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=["bare", "subscriber"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", help="whsec_ secret (subscriber)")
    parser.add_argument("--mode", type=int, default=200, help="200, or the outage status")
    args = parser.parse_args()
    if args.server == "bare":
        app = bare_app()
    else:
        if not args.secret:
            parser.error("the subscriber needs --secret")
        app = subscriber_app(args.secret, args.mode)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()

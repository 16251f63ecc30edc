"""A real HTTP subscriber for delivery tests: uvicorn + Starlette on a loopback port, in a thread.

It records every request it gets (headers, body, arrival time), checks each the way a real
subscriber would (Standard Webhooks `v1` with the `standardwebhooks` package, `v1a` with an
Ed25519 public key, the body as a structured CloudEvent with the `cloudevents` package), and
answers from a script the test sets and may change at any time. It counts requests per
webhook-id and the most requests it ever had in flight at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = [
    "Received",
    "Reply",
    "Subscriber",
    "always",
    "first_attempts",
    "first_requests",
    "new_ed25519_secret",
    "new_hmac_secret",
]


# Secrets as the gateway's config takes them.


def new_hmac_secret() -> str:
    """A `whsec_` secret: base64 of 24 random bytes (the Standard Webhooks form)."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def new_ed25519_secret() -> tuple[str, Ed25519PublicKey]:
    """A `whsk_` signing secret (base64 of a 32-byte seed) and the public key that verifies it."""
    seed = os.urandom(32)
    public_key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return "whsk_" + base64.b64encode(seed).decode(), public_key


# What the subscriber answers.


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering


@dataclass
class Received:
    """One request as the subscriber saw it, and what it made of it."""

    number: int  # 1-based over all requests to this subscriber
    attempt: int  # 1-based among the requests with the same webhook-id
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    raw_headers: list[tuple[str, str]]
    body: bytes
    arrived: float  # time.monotonic() when the request (body included) was in
    arrived_wall: float  # time.time() at the same moment
    webhook_id: str | None
    webhook_timestamp: int | None
    signatures: list[tuple[str, str]]  # (version, base64) entries of webhook-signature
    # Indices (into the subscriber's whsec secrets) that standardwebhooks' Webhook.verify accepts.
    verified_by_standardwebhooks: set[int]
    # For each v1 entry, the index of the whsec secret whose HMAC it is (None: no secret's).
    v1_matches: list[int | None]
    # For each v1a entry, the index of the Ed25519 public key that verifies it (None: none).
    v1a_matches: list[int | None]
    event: Any  # the parsed CloudEvent, or None
    event_error: str | None
    reply: Reply | None = None
    answered: float | None = None  # time.monotonic() when the answer went out

    @property
    def fully_verified(self) -> bool:
        """Every signature entry matched one of the subscriber's keys, and there was one."""
        return (
            bool(self.signatures)
            and all(match is not None for match in self.v1_matches)
            and all(match is not None for match in self.v1a_matches)
            and len(self.v1_matches) + len(self.v1a_matches) == len(self.signatures)
        )


Script = Callable[[Received], Reply]


def always(
    status: int = 200, headers: Mapping[str, str] | None = None, delay: float = 0.0
) -> Script:
    reply = Reply(status, dict(headers or {}), delay=delay)
    return lambda _: reply


def first_attempts(n: int, reply: Reply, then: Reply | None = None) -> Script:
    """`reply` to the first n requests of each webhook-id, `then` (default 200) afterwards."""
    after = then or Reply()
    return lambda received: reply if received.attempt <= n else after


def first_requests(n: int, reply: Reply, then: Reply | None = None) -> Script:
    """`reply` to the first n requests overall, `then` (default 200) afterwards."""
    after = then or Reply()
    return lambda received: reply if received.number <= n else after


def _decode_base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class Subscriber:
    """An HTTP subscriber on 127.0.0.1. Use as a context manager, or start() and stop()."""

    def __init__(
        self,
        hmac_secrets: Sequence[str] = (),
        public_keys: Sequence[Ed25519PublicKey] = (),
        script: Script | None = None,
        port: int = 0,
    ) -> None:
        self.hmac_secrets = list(hmac_secrets)
        self.public_keys = list(public_keys)
        self.script: Script = script or always(200)
        self.requested_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._per_id: collections.Counter[str] = collections.Counter()
        self._in_flight = 0
        self.max_in_flight = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop_error: BaseException | None = None

    # Lifecycle.

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self, timeout: float = 10.0) -> Subscriber:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.requested_port))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST", "GET"])])
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        self._server = server

        def serve() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as error:  # surfaced by start() and stop()
                self._loop_error = error
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name=f"subscriber:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if self._loop_error is not None or not self._thread.is_alive():
                raise RuntimeError(f"subscriber did not start: {self._loop_error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"subscriber not started in {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._server = None
        if self._thread.is_alive():
            raise RuntimeError("subscriber thread did not stop")

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # The handler.

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        arrived, arrived_wall = time.monotonic(), time.time()
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            received = self._inspect(request, body, arrived, arrived_wall)
            reply = self.script(received)
            received.reply = reply
            if reply.delay:
                await asyncio.sleep(reply.delay)
            received.answered = time.monotonic()
            return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))
        finally:
            with self._lock:
                self._in_flight -= 1

    def _inspect(
        self, request: Request, body: bytes, arrived: float, arrived_wall: float
    ) -> Received:
        raw_headers = [
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers.raw
        ]
        headers = {name: value for name, value in raw_headers}
        webhook_id = headers.get("webhook-id")
        timestamp_text = headers.get("webhook-timestamp", "")
        webhook_timestamp = int(timestamp_text) if timestamp_text.isdigit() else None
        signatures: list[tuple[str, str]] = []
        for entry in headers.get("webhook-signature", "").split(" "):
            if entry:
                version, _, value = entry.partition(",")
                signatures.append((version, value))

        verified: set[int] = set()
        for index, secret in enumerate(self.hmac_secrets):
            try:
                Webhook(secret).verify(body, headers, json_parse=False)
            except (WebhookVerificationError, ValueError, binascii.Error):
                continue
            verified.add(index)

        signed = f"{webhook_id}.{timestamp_text}.".encode() + body
        keys = [_decode_base64(secret.removeprefix("whsec_")) for secret in self.hmac_secrets]
        v1_matches: list[int | None] = []
        v1a_matches: list[int | None] = []
        for version, value in signatures:
            raw = _decode_base64(value)
            if version == "v1":
                v1_matches.append(
                    next(
                        (
                            index
                            for index, key in enumerate(keys)
                            if key is not None
                            and raw is not None
                            and hmac.compare_digest(hmac.digest(key, signed, hashlib.sha256), raw)
                        ),
                        None,
                    )
                )
            elif version == "v1a":
                v1a_matches.append(self._ed25519_match(raw, signed))

        event: Any = None
        event_error: str | None = None
        try:
            event = from_http_event(HTTPMessage(headers=headers, body=body))
        except Exception as error:  # recorded, for the test to assert on
            event_error = f"{type(error).__name__}: {error}"

        with self._lock:
            attempt_key = webhook_id or ""
            self._per_id[attempt_key] += 1
            received = Received(
                number=len(self._received) + 1,
                attempt=self._per_id[attempt_key],
                method=request.method,
                path=request.url.path,
                headers=headers,
                raw_headers=raw_headers,
                body=body,
                arrived=arrived,
                arrived_wall=arrived_wall,
                webhook_id=webhook_id,
                webhook_timestamp=webhook_timestamp,
                signatures=signatures,
                verified_by_standardwebhooks=verified,
                v1_matches=v1_matches,
                v1a_matches=v1a_matches,
                event=event,
                event_error=event_error,
            )
            self._received.append(received)
        return received

    def _ed25519_match(self, raw: bytes | None, signed: bytes) -> int | None:
        if raw is None:
            return None
        for index, key in enumerate(self.public_keys):
            try:
                key.verify(raw, signed)
            except InvalidSignature:
                continue
            return index
        return None

    # What the test reads.

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._received)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def for_id(self, webhook_id: str) -> list[Received]:
        return [r for r in self.received if r.webhook_id == webhook_id]

    def answered_ok(self) -> collections.Counter[str]:
        """2xx answers given, per webhook-id (an answer counts once the reply was chosen)."""
        counts: collections.Counter[str] = collections.Counter()
        for r in self.received:
            if r.reply is not None and 200 <= r.reply.status < 300 and r.webhook_id:
                counts[r.webhook_id] += 1
        return counts

    def request_counts(self) -> collections.Counter[str]:
        return collections.Counter(r.webhook_id or "" for r in self.received)

    def duplicates(self) -> int:
        """Requests beyond the first per webhook-id."""
        return sum(n - 1 for n in self.request_counts().values())

    def wait_for(
        self, predicate: Callable[[Subscriber], bool], timeout: float, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"subscriber: {what} not reached in {timeout} s ({self.count} requests)"
                )
            time.sleep(0.02)

    def wait_for_count(self, n: int, timeout: float) -> None:
        self.wait_for(lambda s: s.count >= n, timeout, f"{n} requests")

"""The HTTP transport's connections (gateway/delivery/http.py): an answer read to its end leaves
its connection in the pool for the next delivery; an answer longer than MAX_ANSWER_BYTES is read
only that far, and its connection is closed rather than reused with the rest of it unread.

A raw asyncio server on a loopback port, in the test's own event loop, counts the connections
it accepts and answers each request from a script.
"""

from __future__ import annotations

import asyncio
import base64
import os

from gateway.delivery.http import EXCERPT_BYTES, MAX_ANSWER_BYTES, HttpTransport
from gateway.delivery.transport import OutboundMessage, SendResult


class CountingServer:
    """Answers every request with `body` (200, or `status`), keeps connections alive, and
    counts the connections and requests it got."""

    def __init__(self, body: bytes, status: int = 200, head: bytes = b"") -> None:
        self.body = body
        self.status = status
        self.head = head  # more header lines, each ending in \r\n
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                writer.write(
                    b"HTTP/1.1 %d X\r\n%scontent-length: %d\r\n\r\n%s"
                    % (self.status, self.head, len(self.body), self.body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def message(number: int) -> OutboundMessage:
    return OutboundMessage(
        webhook_id=f"evt_{number}",
        webhook_timestamp=1_700_000_000,
        webhook_signature="v1,c2lnbmF0dXJl",
        body=b'{"id":"evt_%d"}' % number,
    )


async def deliver(server: CountingServer, count: int, userinfo: str = "") -> list[SendResult]:
    """`count` deliveries one after the other through one transport."""
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    transport = HttpTransport(f"http://{userinfo}127.0.0.1:{port}/hook", 5.0, 4)
    try:
        return [await transport.send(message(number)) for number in range(count)]
    finally:
        await transport.close()
        listener.close()
        await listener.wait_closed()


def test_answers_read_to_their_end_leave_the_connection_for_the_next_delivery() -> None:
    server = CountingServer(b'{"ok":true}')
    results = asyncio.run(deliver(server, 5))
    assert [result.outcome for result in results] == ["delivered"] * 5
    assert {result.response_excerpt for result in results} == {'{"ok":true}'}
    assert server.connections == 1, "each delivery opened a connection of its own"
    first = server.requests[0]
    assert first.startswith(b"POST /hook HTTP/1.1\r\n")
    assert b"webhook-id: evt_0\r\n" in first.lower()
    assert first.endswith(b'\r\n\r\n{"id":"evt_0"}')


def test_an_answer_past_the_limit_is_read_that_far_and_its_connection_is_not_reused() -> None:
    server = CountingServer(b"x" * (4 * MAX_ANSWER_BYTES), status=503)
    results = asyncio.run(deliver(server, 3))
    assert [result.outcome for result in results] == ["retry"] * 3
    assert [result.status_code for result in results] == [503] * 3
    assert all(result.response_excerpt == "x" * EXCERPT_BYTES for result in results)
    assert server.connections == 3, "a connection with an answer left unread was reused"


def _headers(request: bytes) -> dict[str, str]:
    head = request.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    pairs = [line.split(":", 1) for line in head]
    assert len({name.lower() for name, _ in pairs}) == len(pairs), f"a header twice: {head}"
    return {name.lower(): value.strip() for name, value in pairs}


def test_a_delivery_carries_the_gateway_s_headers_and_nothing_a_subscriber_set() -> None:
    # The transport sends requests without an httpx client: no cookie jar, no proxy from the
    # environment. A subscriber's Set-Cookie must not come back on the next delivery, and an
    # HTTP_PROXY that goes nowhere must not stand between the gateway and the subscriber.
    server = CountingServer(b"", head=b"set-cookie: session=abc; Path=/\r\n")
    saved = {name: os.environ.get(name) for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY")}
    os.environ.update(HTTP_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    os.environ.pop("NO_PROXY", None)
    try:
        results = asyncio.run(deliver(server, 2, userinfo="ops:s%C3%A9cret@"))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert [result.outcome for result in results] == ["delivered"] * 2
    first, second = (_headers(request) for request in server.requests)
    assert "cookie" not in second
    assert first["user-agent"].startswith("finrelay/")
    assert first["content-type"] == "application/cloudevents+json"
    assert first["accept-encoding"] == "gzip, deflate"
    assert first["webhook-id"] == "evt_0"
    assert first["webhook-timestamp"] == "1700000000"
    assert first["webhook-signature"] == "v1,c2lnbmF0dXJl"
    assert first["content-length"] == str(len(b'{"id":"evt_0"}'))
    assert first["host"].startswith("127.0.0.1:")
    # Percent-decoded, UTF-8, base64: as httpx's BasicAuth sends it.
    assert first["authorization"] == "Basic " + base64.b64encode("ops:sécret".encode()).decode()

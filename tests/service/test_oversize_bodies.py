"""An over-size body ends in a 413 the client reads (docs/reference/ingress.md), whatever client it
is.

Python's urllib and http.client send the whole body before they read a byte of the answer. A
server that answers early and closes with the rest of the body unread makes the kernel reset
the connection, and such a client sees a BrokenPipeError or ConnectionResetError (a network
error, retried as one) instead of the 413. The gateway answers at once, then reads the rest
and throws it away, up to a bound, so the client finishes sending and reads its answer."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import msgspec
import pytest

from tests.service.harness import BASE_CONFIG, GatewayProcess
from tests.support import TOKEN

MIB = 1024 * 1024
TRIES = 10
# Over server.max_body_bytes (1 MiB in BASE_CONFIG): twice, and ten times.
SIZES = (2 * MIB, 10 * MIB)
PATH = f"/webhooks/finchpay?token={TOKEN}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("gateway"), BASE_CONFIG).start()
    yield process
    process.stop()


def assert_too_large(status: int, body: bytes) -> None:
    assert status == 413
    assert msgspec.json.decode(body) == {"error": "payload_too_large"}


def request_head(length: int) -> bytes:
    """A raw request's head, declaring a body of `length` bytes."""
    return f"POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {length}\r\n\r\n".encode()


def pieces(size: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    """`size` bytes in pieces: a body sent chunked, with no content-length."""
    for start in range(0, size, piece):
        yield b" " * min(piece, size - start)


@pytest.mark.parametrize("size", SIZES)
def test_urllib_reads_the_413_of_an_oversize_body(gateway: GatewayProcess, size: int) -> None:
    body = b" " * size
    for _ in range(TRIES):
        request = urllib.request.Request(
            gateway.base_url + PATH,
            data=body,
            method="POST",
            headers={"content-type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        with refused.value:
            assert_too_large(refused.value.code, refused.value.read())


@pytest.mark.parametrize("size", SIZES)
def test_http_client_reads_the_413_of_an_oversize_body(gateway: GatewayProcess, size: int) -> None:
    body = b" " * size
    for _ in range(TRIES):
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        try:
            connection.request("POST", PATH, body=body)
            response = connection.getresponse()
            assert_too_large(response.status, response.read())
            # Nothing more comes on this connection: the rest of its body was thrown away.
            assert response.getheader("connection") == "close"
        finally:
            connection.close()


@pytest.mark.parametrize("size", SIZES)
def test_a_chunked_oversize_body_gets_a_readable_413(gateway: GatewayProcess, size: int) -> None:
    # No content-length (urllib sends an iterable chunked): the gateway counts, answers once
    # past the limit, and reads the rest.
    for _ in range(TRIES):
        request = urllib.request.Request(gateway.base_url + PATH, data=pieces(size), method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        with refused.value:
            assert_too_large(refused.value.code, refused.value.read())


def test_the_413_comes_before_the_body_is_sent(gateway: GatewayProcess) -> None:
    # A client that reads while it sends (curl does) has its answer at once, and can stop.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection:
        connection.sendall(request_head(2 * MIB) + b" " * 4096)
        answer = b""
        while b"payload_too_large" not in answer:
            received = connection.recv(4096)
            assert received, answer
            answer += received
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 413")
    assert b"connection: close" in head


def test_a_client_that_stops_sending_is_let_go(gateway: GatewayProcess) -> None:
    # 4 KiB of a declared 2 MiB, then nothing: the gateway reads the rest for a while only.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as connection:
        connection.sendall(request_head(2 * MIB) + b" " * 4096)
        started = time.monotonic()
        answer = b""
        while received := connection.recv(65536):
            answer += received
        closed_after = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413")
    assert closed_after < 20
    # And the gateway is still answering others.
    assert gateway.post("finchpay", b"{}", params={"token": TOKEN}).status_code == 422

"""An HTTP subscriber whose URL carries `user:password@` (basic auth) is delivered to: the
credentials go out as one Authorization header, and never as part of the request line."""

from __future__ import annotations

import asyncio
import base64

import pytest

from gateway.delivery.http import HttpTransport
from gateway.delivery.transport import OutboundMessage
from tests.delivery.subscriber import Subscriber


@pytest.mark.parametrize(
    ("userinfo", "user", "password"),
    [
        ("ledger:s3cret", "ledger", "s3cret"),
        ("a%40b:p%3Aw%2Fd", "a@b", "p:w/d"),
        ("only", "only", ""),
    ],
)
def test_credentials_in_the_url_are_sent_as_basic_auth(
    userinfo: str, user: str, password: str
) -> None:
    with Subscriber() as subscriber:
        url = subscriber.url.replace("http://", f"http://{userinfo}@")

        async def send() -> str:
            transport = HttpTransport(url, timeout_seconds=5, max_in_flight=2)
            try:
                message = OutboundMessage(
                    webhook_id="evt_1", webhook_timestamp=1, webhook_signature=None, body=b"{}"
                )
                result = await transport.send(message)
            finally:
                await transport.close()
            return result.outcome

        assert asyncio.run(send()) == "delivered"
        (request,) = subscriber.received
    expected = base64.b64encode(f"{user}:{password}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"

"""A gateway with the admin API on (a real `gateway serve` subprocess), and events to post."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import msgspec

from tests.service.harness import BASE_CONFIG, GatewayProcess
from tests.support import TOKEN

ADMIN_TOKEN = "adm-4c1e0b7f9d2a6e8355b1c0d4"
OTHER_ADMIN_TOKEN = "adm-rotated-8e2f61a0c9b74d13"
ADMIN_CONFIG = BASE_CONFIG + f'\n[admin]\ntokens = ["{ADMIN_TOKEN}", "{OTHER_ADMIN_TOKEN}"]\n'
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

T = TypeVar("T")


def finchpay_body(payment_id: str, status: str = "COMPLETE") -> bytes:
    """A FinchPay webhook: its event's subject is `payment_id`; COMPLETE is payment.succeeded
    (data.status "succeeded"), ERROR payment.failed ("failed")."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return msgspec.json.encode(
        {
            "id": payment_id,
            "status": status,
            "partner_key": "6794e41ed645",
            "amount_from": "100",
            "asset_from": "EUR",
            "asset_from_extra": None,
            "amount_to": "109.58",
            "asset_to": "USDT",
            "asset_network_to": "TRC20",
            "asset_to_extra": None,
            "partner_profit_amount": "2.38",
            "partner_profit_currency": "EUR",
            "event_time": now,
            "external_id": f"order-{payment_id}",
            "transaction_hash": "0" * 32,
            "payment_method": "card",
            "side": "buy",
        }
    )


def post_finchpay(gateway: GatewayProcess, payment_id: str, status: str = "COMPLETE") -> None:
    answer = gateway.post("finchpay", finchpay_body(payment_id, status), params={"token": TOKEN})
    assert answer.status_code == 200, answer.text


def api(gateway: GatewayProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return httpx.request(
        method, f"{gateway.base_url}/admin/api{path}", headers=headers, timeout=10, **kwargs
    )


def wait_for(what: Callable[[], T | None], timeout: float = 10.0, step: float = 0.05) -> T:
    """`what()` once it is truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {timeout} s")
        time.sleep(step)

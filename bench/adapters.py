"""Cost of verify + normalize per event, per adapter, as a ratio to a bare `json.loads`.

The machines here are shared and noisy, so absolute times mean little: each figure is divided by
the time `json.loads` takes on the same bytes, measured in the same run, interleaved. The aim is
the whole verify + normalize under 5x a bare `json.loads`.

A provider described in TOML must cost about what a built-in does: FinFusion's description
(config/examples/providers/finfusion.toml) runs beside FinFusion's code on the same body, and
its ratio to the code is printed (aim: within 1.5x).

    .venv/bin/python bench/adapters.py            # or: make bench
    .venv/bin/python bench/adapters.py --rounds 15 --number 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.base import Adapter
from adapters.described import described_adapter, parse_description
from adapters.registry import ADAPTERS
from adapters.request import InboundRequest
from adapters.source import Secret, SourceSettings
from schemas.event import encode_event

SECRET = "whsec_bench_Zm9vYmFyYmF6cXV4cXV1eA"
TOKEN = "bench-token"

# One realistic body per provider, the size their documentation shows.
BODIES: dict[str, bytes] = {
    "finaegis": (
        b'{"transfer_uuid":"9b1c6a1e-3c1f-4c9e-9a55-0d4d1c2b7e11",'
        b'"from_account_uuid":"a1b2c3d4-0000-4000-8000-000000000001",'
        b'"to_account_uuid":"a1b2c3d4-0000-4000-8000-000000000002","amount":150000,'
        b'"currency":"EUR","reference":"INV-2025-0042","status":"completed",'
        b'"event":"transfer.completed","timestamp":"2025-01-14T10:30:00+00:00"}'
    ),
    "finexer": (
        b'{"id":"evt_BziHSDpmRBDsdfxGebuC7a","object":"event","created_at":"2020-01-30T12:44:55Z",'
        b'"type":"consent.created","data":{"object":{"id":"cst_5iHhGn4lSjvQofwhWVWKoZ",'
        b'"object":"consent","created_at":"2020-01-30T12:44:55Z",'
        b'"updated_at":"2020-01-30T12:44:55Z","provider":"orion",'
        b'"customer":"cus_hjw5ilxO9zQK5kpS","expiry_date":"2021-01-30","failure_code":null,'
        b'"failure_message":null,"status":"pending","metadata":{}}}}'
    ),
    "finfusion": (
        b'{"id":"evt_123456789","object":"event","type":"payment.succeeded","created":1634567890,'
        b'"livemode":false,"data":{"object":{"id":"pay_123456789","object":"payment",'
        b'"amount":1000,"currency":"usd","status":"succeeded","created":1634567890}}}'
    ),
    "finchpay": (
        b'{"id":"c158f7dd-c2a6-49d0-96bf-4f9fd38c0376","status":"COMPLETE",'
        b'"partner_key":"6794e41ed645","amount_from":"100","asset_from":"EUR",'
        b'"asset_from_extra":null,"amount_to":"109.58","asset_to":"USDT",'
        b'"asset_network_to":"TRC20","asset_to_extra":null,"partner_profit_amount":"2.38",'
        b'"partner_profit_currency":"EUR","event_time":"2023-10-11T10:14:14.491786009Z",'
        b'"external_id":"your_generated_external_id","transaction_hash":"1f1c70b36ecfaf266bfee6"}'
    ),
    "account_lifecycle": (
        b'{"message":"Transaction Update","identifier":"TRANSACTION_CONFIRMED","code":3021,'
        b'"accountNumber":"GB1204550505050568","amount":300,"transactionId":"TRX-265457850",'
        b'"transactionRef":"XFER-98709678756"}'
    ),
}


DESCRIPTION = Path(__file__).resolve().parents[1] / "config/examples/providers/finfusion.toml"


def described_finfusion() -> Adapter:
    """FinFusion's description, named as the built-in (the same body and settings fit it)."""
    table = tomllib.loads(DESCRIPTION.read_text())["providers"]["finfusion_described"]
    description, problems = parse_description(table, "providers.finfusion_described")
    if description is None:
        raise SystemExit(f"{DESCRIPTION}: {problems}")
    return described_adapter("finfusion", description, "config")


def best_per_call(function: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        function()
    return (time.perf_counter() - start) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median kept)")
    parser.add_argument("--number", type=int, default=10000, help="calls per round")
    args = parser.parse_args()

    now = datetime.now(UTC)
    print(f"# bench/adapters.py  {now:%Y-%m-%d}  Python {platform.python_version()}")
    print(f"# {args.rounds} rounds x {args.number} calls, median per call; ratio = x / json.loads")
    header = f"{'adapter':<18}{'bytes':>6}{'json.loads':>12}{'verify+normalize':>18}"
    print(header + f"{'ratio':>8}{'+encode':>10}{'ratio':>8}")
    ratios = []
    per_call: dict[str, float] = {}
    rows = [(name, name, adapter) for name, adapter in ADAPTERS.items()]
    rows.append(("finfusion (TOML)", "finfusion", described_finfusion()))
    for label, name, adapter in rows:
        body = BODIES[name]
        settings = SourceSettings(
            name=f"{name}-bench",
            adapter=name,
            secrets=(Secret(SECRET),),
            tokens=(Secret(TOKEN),),
            currency="GBP",
        )
        headers = adapter.sign(body, SECRET, now) if adapter.sign else {}
        request = InboundRequest(body=body, headers=headers, query={"token": TOKEN})

        def baseline(body: bytes = body) -> object:
            return json.loads(body)

        def gateway_path(
            adapter=adapter, request=request, settings=settings, headers=headers
        ) -> object:
            verification = adapter.verify(request, settings, now)
            return adapter.normalize(request.body, headers, settings, now, verification)

        def with_encode(gateway_path=gateway_path) -> object:
            return encode_event(gateway_path())  # type: ignore[arg-type]

        samples: dict[str, list[float]] = {"base": [], "path": [], "encode": []}
        for _ in range(args.rounds):
            samples["base"].append(best_per_call(baseline, args.number))
            samples["path"].append(best_per_call(gateway_path, args.number))
            samples["encode"].append(best_per_call(with_encode, args.number))
        base, path, encode = (statistics.median(samples[key]) for key in samples)
        if label == name:
            ratios.append(path / base)
        per_call[label] = path / base
        print(
            f"{label:<18}{len(body):>6}{base * 1e6:>10.2f}us{path * 1e6:>16.2f}us"
            f"{path / base:>7.2f}x{encode * 1e6:>8.2f}us{encode / base:>7.2f}x"
        )
    print(f"# worst ratio of the built-ins {max(ratios):.2f}x (aim: under 5x)")
    described = per_call["finfusion (TOML)"] / per_call["finfusion"]
    print(f"# FinFusion described in TOML / as code: {described:.2f}x (aim: within 1.5x)")


if __name__ == "__main__":
    main()

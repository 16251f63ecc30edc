"""How each provider's requests are authenticated (docs/reference/ingress.md), one named case per
rule."""

from __future__ import annotations

from datetime import timedelta

import pytest

from adapters import finaegis, finexer, finfusion
from adapters.errors import InvalidSignature, InvalidToken
from adapters.registry import ADAPTERS
from adapters.request import InboundRequest
from tests.support import NOW, OTHER_SECRET, SECRET, SIGNED_ADAPTERS, TOKEN, settings_for

BODY = b'{"id":"evt_1","type":"payment.succeeded","created":1767323045,"data":{"object":{}}}'
# The signed adapters whose rules have their named cases below, one section each.
WITH_CASES_HERE = ("finfusion", "finexer", "finaegis")


def test_every_signed_adapter_has_its_cases_here() -> None:
    # A new signed built-in fails here until its section is written.
    assert set(WITH_CASES_HERE) == set(SIGNED_ADAPTERS)


def verify(adapter: str, headers: dict[str, str], body: bytes = BODY, **settings: object) -> str:
    request = InboundRequest(body=body, headers=headers)
    return ADAPTERS[adapter].verify(request, settings_for(adapter, **settings), NOW)


def reject(adapter: str, headers: dict[str, str], body: bytes = BODY, **settings: object) -> str:
    with pytest.raises(InvalidSignature) as caught:
        verify(adapter, headers, body, **settings)
    detail = caught.value.detail
    assert SECRET not in detail
    for value in headers.values():
        assert value not in detail or len(value) < 8, "a header value leaked into the detail"
    return detail


# FinFusion: Stripe's scheme.


def test_finfusion_accepts_its_own_signature() -> None:
    assert verify("finfusion", finfusion.sign_finfusion(BODY, SECRET, NOW)) == "signature"


def test_finfusion_accepts_any_of_several_v1_signatures() -> None:
    good = finfusion.sign_finfusion(BODY, SECRET, NOW)["x-finfusion-signature"]
    t, v1 = good.split(",")
    header = f"{t},v1={'0' * 64},{v1}"
    assert verify("finfusion", {"x-finfusion-signature": header}) == "signature"


def test_finfusion_rejects_missing_header() -> None:
    assert "missing" in reject("finfusion", {})


@pytest.mark.parametrize(
    "header",
    ["", "garbage", "t=abc,v1=" + "a" * 64, "v1=" + "a" * 64, "t=1767323045", "t=1767323045,v1=zz"],
)
def test_finfusion_rejects_malformed_header(header: str) -> None:
    assert "malformed" in reject("finfusion", {"x-finfusion-signature": header})


def test_finfusion_rejects_signature_by_another_secret() -> None:
    headers = finfusion.sign_finfusion(BODY, OTHER_SECRET, NOW)
    assert "no signature matches" in reject("finfusion", headers)


def test_finfusion_rejects_stale_timestamp() -> None:
    headers = finfusion.sign_finfusion(BODY, SECRET, NOW - timedelta(seconds=301))
    assert "older" in reject("finfusion", headers)


def test_finfusion_rejects_timestamp_from_the_future() -> None:
    headers = finfusion.sign_finfusion(BODY, SECRET, NOW + timedelta(seconds=301))
    assert "ahead" in reject("finfusion", headers)


def test_finfusion_honours_the_source_tolerance() -> None:
    headers = finfusion.sign_finfusion(BODY, SECRET, NOW - timedelta(seconds=301))
    assert verify("finfusion", headers, tolerance_seconds=600) == "signature"


def test_finfusion_accepts_the_previous_secret_during_rotation() -> None:
    headers = finfusion.sign_finfusion(BODY, OTHER_SECRET, NOW)
    assert verify("finfusion", headers, secrets=[SECRET, OTHER_SECRET]) == "signature"


def test_signed_source_without_secret_rejects_everything() -> None:
    headers = finfusion.sign_finfusion(BODY, SECRET, NOW)
    assert "no secret" in reject("finfusion", headers, secrets=[])


# Finexer: t=<time>;s=<hex> in several spellings.


def _finexer_header(t: str, secret: str = SECRET, sep: str = ";", key: str = "s") -> str:
    from adapters.signatures import hmac_sha256

    return f"t={t}{sep}{key}={hmac_sha256(secret, t.encode() + b'.' + BODY).hex()}"


@pytest.mark.parametrize(
    ("t", "sep", "key"),
    [
        ("2026-01-02T03:04:05Z", ";", "s"),
        ("2026-01-02T03:04:05Z", ",", "s"),
        ("2026-01-02T03:04:05.123Z", ";", "v1"),
        ("2026-01-02T03:04:05+00:00", ";", "s"),
        ("1767323045", ";", "s"),
        ("1767323045", ",", "v1"),
    ],
)
def test_finexer_accepts_every_documented_spelling(t: str, sep: str, key: str) -> None:
    header = _finexer_header(t, sep=sep, key=key)
    assert verify("finexer", {"fx-signature": header}) == "signature"


def test_finexer_signs_the_timestamp_exactly_as_sent() -> None:
    # The same instant spelled differently is a different signed message.
    signed = _finexer_header("2026-01-02T03:04:05Z")
    respelled = signed.replace("2026-01-02T03:04:05Z", "2026-01-02T03:04:05+00:00")
    reject("finexer", {"fx-signature": respelled})


def test_finexer_reads_the_configured_header_name() -> None:
    header = _finexer_header("2026-01-02T03:04:05Z")
    assert verify("finexer", {"x-sig": header}, signature_header="X-Sig") == "signature"
    assert "missing x-sig" in reject("finexer", {"fx-signature": header}, signature_header="X-Sig")


def test_finexer_falls_back_to_x_finexer_signature() -> None:
    header = _finexer_header("2026-01-02T03:04:05Z")
    assert verify("finexer", {"x-finexer-signature": header}) == "signature"


def test_finexer_rejects_stale_timestamp() -> None:
    assert "older" in reject("finexer", {"fx-signature": _finexer_header("2026-01-02T02:59:04Z")})


def test_finexer_rejects_unparseable_timestamp() -> None:
    assert "malformed" in reject("finexer", {"fx-signature": _finexer_header("yesterday")})


@pytest.mark.parametrize("header", ["t=2026-01-02T03:04:05Z", "s=" + "a" * 64, "t;s", ""])
def test_finexer_rejects_malformed_header(header: str) -> None:
    assert "malformed" in reject("finexer", {"fx-signature": header})


def test_finexer_sample_signature_verifies() -> None:
    assert verify("finexer", finexer.sign_finexer(BODY, SECRET, NOW)) == "signature"


# FinAegis: the code's plain variant and the website's timestamped one.


def test_finaegis_accepts_plain_signature_over_the_raw_body() -> None:
    body = b'{"event":"account.created","url":"https:\\/\\/x"}'
    headers = finaegis.sign_finaegis(body, SECRET, NOW)
    assert verify("finaegis", headers, body) == "signature"


def test_finaegis_rejects_plain_signature_of_the_reencoded_body() -> None:
    # PHP wrote `\/`; a verifier that re-serialized before checking would see `/`.
    body = b'{"event":"account.created","url":"https:\\/\\/x"}'
    headers = finaegis.sign_finaegis(body.replace(b"\\/", b"/"), SECRET, NOW)
    reject("finaegis", headers, body)


def test_finaegis_accepts_a_bare_hex_digest() -> None:
    digest = finaegis.sign_finaegis(BODY, SECRET, NOW)["x-webhook-signature"].removeprefix(
        "sha256="
    )
    assert verify("finaegis", {"x-webhook-signature": digest}) == "signature"


@pytest.mark.parametrize(
    "timestamp", ["1767323045", "2026-01-02T03:04:05+00:00", "2026-01-02T03:04:05Z"]
)
def test_finaegis_accepts_timestamped_variant(timestamp: str) -> None:
    from adapters.signatures import hmac_sha256

    digest = hmac_sha256(SECRET, timestamp.encode() + b"." + BODY).hex()
    headers = {"x-finaegis-timestamp": timestamp, "x-finaegis-signature": f"sha256={digest}"}
    assert verify("finaegis", headers) == "signature"


def test_finaegis_timestamped_variant_needs_the_timestamp_header() -> None:
    headers = finaegis.sign_finaegis_timestamped(BODY, SECRET, NOW)
    del headers["x-finaegis-timestamp"]
    assert "X-FinAegis-Timestamp" in reject("finaegis", headers)


def test_finaegis_rejects_stale_timestamped_signature() -> None:
    headers = finaegis.sign_finaegis_timestamped(BODY, SECRET, NOW - timedelta(minutes=6))
    assert "older" in reject("finaegis", headers)


def test_finaegis_rejects_missing_signature() -> None:
    assert "missing" in reject("finaegis", {"x-webhook-event": "account.created"})


# Signed sources that also set a token check both (Finexer's `?key=` suggestion).


def test_signed_source_with_token_needs_both() -> None:
    headers = finfusion.sign_finfusion(BODY, SECRET, NOW)
    settings = settings_for("finfusion", tokens=[TOKEN], token_param="key")
    adapter = ADAPTERS["finfusion"]
    good = InboundRequest(body=BODY, headers=headers, query={"key": TOKEN})
    assert adapter.verify(good, settings, NOW) == "signature"
    with pytest.raises(InvalidToken):
        adapter.verify(InboundRequest(body=BODY, headers=headers), settings, NOW)


@pytest.mark.parametrize("name", SIGNED_ADAPTERS)
def test_a_signed_adapter_declares_the_headers_its_signature_travels_in(name: str) -> None:
    # Ingress strips these from what it keeps in quarantine: a signature proves identity once.
    adapter = ADAPTERS[name]
    sent = adapter.sign(b"{}", SECRET, NOW) if adapter.sign else {}
    carrying = {header for header in sent if "timestamp" not in header}
    assert carrying
    assert carrying <= set(adapter.signature_headers)

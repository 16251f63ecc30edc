"""Address allow-lists and shared tokens (docs/reference/ingress.md).

Unsigned providers (FinchPay, account-lifecycle) authenticate with a token (query parameter
`token_param`, default `token`, or `Authorization: Bearer`) and/or `allow_ips`; with both set,
both must pass. Any source may set `allow_ips`, and that check answers first (403 before 401).
"""

from __future__ import annotations

from typing import Any

import pytest

from adapters.errors import (
    AuthenticationError,
    ForbiddenAddress,
    InvalidSignature,
    InvalidToken,
)
from adapters.registry import ADAPTERS
from adapters.request import InboundRequest
from tests.support import (
    NOW,
    OTHER_SECRET,
    SECRET,
    SIGNED_ADAPTERS,
    TOKEN,
    UNSIGNED_ADAPTERS,
    settings_for,
)

BODY = b'{"id":"tx_1","status":"COMPLETE"}'
ALL_ADAPTERS = sorted(ADAPTERS)
ALLOW = ["203.0.113.0/24", "2001:db8::/32"]


def verify(
    adapter: str,
    *,
    client: str | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **settings: Any,
) -> str:
    request = InboundRequest(body=BODY, headers=headers or {}, query=query or {}, client=client)
    return ADAPTERS[adapter].verify(request, settings_for(adapter, **settings), NOW)


def signed_headers(adapter: str, secret: str = SECRET, body: bytes = BODY) -> dict[str, str]:
    sign = ADAPTERS[adapter].sign
    assert sign is not None
    return sign(body, secret, NOW)


def test_there_are_signed_and_unsigned_adapters() -> None:
    assert set(UNSIGNED_ADAPTERS) == {"finchpay", "account_lifecycle"}
    assert set(SIGNED_ADAPTERS) == {"finaegis", "finexer", "finfusion"}


# allow_ips: who may post at all.


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
@pytest.mark.parametrize(
    "client",
    ["203.0.113.7", "203.0.113.255", "2001:db8::1", "2001:db8:ffff::abcd", "::ffff:203.0.113.7"],
)
def test_client_inside_allow_ips_passes(adapter: str, client: str) -> None:
    assert verify(adapter, client=client, tokens=[], allow_ips=ALLOW) == "allowlist"


@pytest.mark.parametrize("adapter", ALL_ADAPTERS)
@pytest.mark.parametrize(
    "client",
    [
        "198.51.100.7",  # IPv4 outside
        "203.0.114.1",  # just past the /24
        "2001:db9::1",  # IPv6 outside
        "::ffff:198.51.100.7",  # IPv4-mapped IPv6, outside
        "::1",
        "127.0.0.1",
    ],
)
def test_client_outside_allow_ips_is_forbidden(adapter: str, client: str) -> None:
    with pytest.raises(ForbiddenAddress):
        verify(adapter, client=client, allow_ips=ALLOW)


@pytest.mark.parametrize("adapter", ALL_ADAPTERS)
def test_unknown_client_address_is_forbidden_when_there_is_an_allow_list(adapter: str) -> None:
    with pytest.raises(ForbiddenAddress):
        verify(adapter, client=None, allow_ips=ALLOW)


@pytest.mark.parametrize("adapter", ALL_ADAPTERS)
@pytest.mark.parametrize(
    "client",
    ["", "not-an-ip", "203.0.113.7:443", "203.0.113", "203.0.113.7/32", "[2001:db8::1]", " "],
)
def test_malformed_client_address_is_forbidden(adapter: str, client: str) -> None:
    with pytest.raises(ForbiddenAddress) as caught:
        verify(adapter, client=client, allow_ips=ALLOW)
    assert caught.value.code == "forbidden_address"


def test_ipv4_mapped_client_matches_an_ipv4_allow_list() -> None:
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
    assert verify("finchpay", client="::ffff:203.0.113.9", tokens=[], allow_ips=ALLOW)
    with pytest.raises(ForbiddenAddress):
        verify("finchpay", client="::ffff:203.0.112.9", tokens=[], allow_ips=ALLOW)


def test_single_address_allow_list() -> None:
    assert verify("finchpay", client="192.0.2.10", tokens=[], allow_ips=["192.0.2.10/32"])
    with pytest.raises(ForbiddenAddress):
        verify("finchpay", client="192.0.2.11", tokens=[], allow_ips=["192.0.2.10/32"])


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_allow_ips_alone_verifies_as_allowlist(adapter: str) -> None:
    assert verify(adapter, client="203.0.113.7", tokens=[], allow_ips=ALLOW) == "allowlist"


@pytest.mark.parametrize("adapter", ALL_ADAPTERS)
def test_no_allow_list_means_any_address_including_none(adapter: str) -> None:
    headers = signed_headers(adapter) if ADAPTERS[adapter].signed else {}
    query = {} if ADAPTERS[adapter].signed else {"token": TOKEN}
    for client in (None, "198.51.100.7", "garbage"):
        assert verify(adapter, client=client, headers=headers, query=query) in (
            "signature",
            "token",
        )


# Tokens, for providers that do not sign.


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_token_in_the_default_query_parameter_verifies(adapter: str) -> None:
    assert verify(adapter, query={"token": TOKEN}) == "token"


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_token_in_a_custom_query_parameter_verifies(adapter: str) -> None:
    assert verify(adapter, query={"key": TOKEN}, token_param="key") == "token"


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_token_in_the_default_parameter_is_ignored_when_a_custom_one_is_set(adapter: str) -> None:
    with pytest.raises(InvalidToken):
        verify(adapter, query={"token": TOKEN}, token_param="key")


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_token_as_bearer_authorization_verifies(adapter: str, scheme: str) -> None:
    assert verify(adapter, headers={"authorization": f"{scheme} {TOKEN}"}) == "token"


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ({"token": "wrong"}, {}),
        ({"token": TOKEN[:-1]}, {}),
        ({"token": TOKEN + "x"}, {}),
        ({"token": TOKEN.upper()}, {}),
        ({}, {"authorization": "Bearer wrong"}),
        ({}, {"authorization": f"Basic {TOKEN}"}),
        ({}, {"authorization": TOKEN}),
        ({"key": TOKEN}, {}),  # the default parameter is `token`
    ],
)
def test_wrong_token_is_an_invalid_token(
    adapter: str, query: dict[str, str], headers: dict[str, str]
) -> None:
    with pytest.raises(InvalidToken) as caught:
        verify(adapter, query=query, headers=headers)
    assert TOKEN not in caught.value.detail
    assert caught.value.code == "invalid_token"


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ({}, {}),
        ({"token": ""}, {}),
        ({}, {"authorization": ""}),
        ({}, {"authorization": "Bearer "}),
    ],
)
def test_missing_token_is_an_invalid_token(
    adapter: str, query: dict[str, str], headers: dict[str, str]
) -> None:
    with pytest.raises(InvalidToken):
        verify(adapter, query=query, headers=headers)


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_any_of_several_tokens_verifies(adapter: str) -> None:
    for token in (TOKEN, "second-token"):
        assert verify(adapter, query={"token": token}, tokens=[TOKEN, "second-token"]) == "token"
    with pytest.raises(InvalidToken):
        verify(adapter, query={"token": "third"}, tokens=[TOKEN, "second-token"])


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_non_ascii_token_is_compared_without_error(adapter: str) -> None:
    assert verify(adapter, query={"token": "jeton-é"}, tokens=["jeton-é"]) == "token"
    with pytest.raises(InvalidToken):
        verify(adapter, query={"token": "jeton-e"}, tokens=["jeton-é"])


# Token and allow_ips together: both must pass.


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_token_and_allow_ips_both_passing_verifies_as_token(adapter: str) -> None:
    assert verify(adapter, client="203.0.113.7", query={"token": TOKEN}, allow_ips=ALLOW) == "token"


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_token_and_allow_ips_with_a_wrong_token_is_an_invalid_token(adapter: str) -> None:
    with pytest.raises(InvalidToken):
        verify(adapter, client="203.0.113.7", query={"token": "wrong"}, allow_ips=ALLOW)
    with pytest.raises(InvalidToken):
        verify(adapter, client="203.0.113.7", allow_ips=ALLOW)


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_token_and_allow_ips_with_a_bad_address_is_forbidden(adapter: str) -> None:
    with pytest.raises(ForbiddenAddress):
        verify(adapter, client="198.51.100.7", query={"token": TOKEN}, allow_ips=ALLOW)


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_bad_address_and_bad_token_answers_forbidden_first(adapter: str) -> None:
    with pytest.raises(ForbiddenAddress):
        verify(adapter, client="198.51.100.7", query={"token": "wrong"}, allow_ips=ALLOW)


# Unauthenticated sources.


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_allow_unauthenticated_verifies_as_none(adapter: str) -> None:
    assert verify(adapter, tokens=[], allow_unauthenticated=True) == "none"


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_allow_unauthenticated_does_not_waive_a_configured_token(adapter: str) -> None:
    with pytest.raises(InvalidToken):
        verify(adapter, allow_unauthenticated=True)
    assert verify(adapter, query={"token": TOKEN}, allow_unauthenticated=True) == "token"


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_allow_unauthenticated_does_not_waive_allow_ips(adapter: str) -> None:
    with pytest.raises(ForbiddenAddress):
        verify(
            adapter, client="198.51.100.7", tokens=[], allow_ips=ALLOW, allow_unauthenticated=True
        )
    assert (
        verify(
            adapter, client="203.0.113.7", tokens=[], allow_ips=ALLOW, allow_unauthenticated=True
        )
        == "allowlist"
    )


@pytest.mark.parametrize("adapter", UNSIGNED_ADAPTERS)
def test_source_with_no_token_no_allow_list_and_no_waiver_refuses(adapter: str) -> None:
    with pytest.raises(AuthenticationError):
        verify(adapter, tokens=[], query={"token": TOKEN})


@pytest.mark.parametrize("adapter", SIGNED_ADAPTERS)
def test_allow_unauthenticated_does_not_waive_a_signature(adapter: str) -> None:
    with pytest.raises(InvalidSignature):
        verify(adapter, allow_unauthenticated=True)


# Signed adapters: the address check runs before the signature check.


@pytest.mark.parametrize("adapter", SIGNED_ADAPTERS)
def test_bad_address_with_bad_signature_is_forbidden_address(adapter: str) -> None:
    headers = signed_headers(adapter, OTHER_SECRET)
    with pytest.raises(ForbiddenAddress):
        verify(adapter, client="198.51.100.7", headers=headers, allow_ips=ALLOW)


@pytest.mark.parametrize("adapter", SIGNED_ADAPTERS)
def test_bad_address_with_no_signature_is_forbidden_address(adapter: str) -> None:
    with pytest.raises(ForbiddenAddress):
        verify(adapter, client="198.51.100.7", allow_ips=ALLOW)


@pytest.mark.parametrize("adapter", SIGNED_ADAPTERS)
def test_bad_address_with_good_signature_is_forbidden_address(adapter: str) -> None:
    with pytest.raises(ForbiddenAddress):
        verify(adapter, client="198.51.100.7", headers=signed_headers(adapter), allow_ips=ALLOW)


@pytest.mark.parametrize("adapter", SIGNED_ADAPTERS)
def test_good_address_with_bad_signature_is_invalid_signature(adapter: str) -> None:
    headers = signed_headers(adapter, OTHER_SECRET)
    with pytest.raises(InvalidSignature):
        verify(adapter, client="203.0.113.7", headers=headers, allow_ips=ALLOW)


@pytest.mark.parametrize("adapter", SIGNED_ADAPTERS)
def test_good_address_with_good_signature_verifies_as_signature(adapter: str) -> None:
    headers = signed_headers(adapter)
    assert verify(adapter, client="203.0.113.7", headers=headers, allow_ips=ALLOW) == "signature"
    assert verify(adapter, client="::ffff:203.0.113.7", headers=headers, allow_ips=ALLOW)


@pytest.mark.parametrize("adapter", SIGNED_ADAPTERS)
def test_signed_source_with_a_token_needs_signature_and_token(adapter: str) -> None:
    headers = signed_headers(adapter)
    assert verify(adapter, headers=headers, query={"key": TOKEN}, tokens=[TOKEN], token_param="key")
    with pytest.raises(InvalidToken):
        verify(adapter, headers=headers, tokens=[TOKEN], token_param="key")
    with pytest.raises(InvalidSignature):
        verify(adapter, query={"key": TOKEN}, tokens=[TOKEN], token_param="key")


@pytest.mark.parametrize("adapter", ALL_ADAPTERS)
def test_authentication_errors_never_contain_the_token_or_secret(adapter: str) -> None:
    cases: list[dict[str, Any]] = [
        {"client": "198.51.100.7", "allow_ips": ALLOW},
        {"query": {"token": TOKEN + "x"}},
        {"headers": {"authorization": f"Bearer {TOKEN}x"}},
    ]
    for case in cases:
        with pytest.raises(AuthenticationError) as caught:
            verify(adapter, **case)
        assert TOKEN not in caught.value.detail
        assert SECRET not in caught.value.detail
        assert caught.value.detail

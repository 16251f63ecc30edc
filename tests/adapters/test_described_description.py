"""Checking a provider description (docs/reference/providers.md): every problem, at its place, with
hints.

`parse_description` is what check-config runs on `[providers.<name>]`; each test here is one
message a user can see, and the place it is reported at.
"""

from __future__ import annotations

import tomllib

import pytest

from adapters.described import Problem, ProviderDescription, parse_description

PLACE = "providers.ledgerly"

VALID = """
[signature]
scheme = "hmac"
header = "X-Ledgerly-Signature"
format = "t={timestamp},v1={signature}"
signed = "{timestamp}.{body}"

[event]
id = "id"
type = "type"

[types]
"payment.completed" = "payment.succeeded"
"payout.*" = "transfer.*"
"""


def parse(text: str) -> tuple[ProviderDescription | None, list[Problem]]:
    return parse_description(tomllib.loads(text), PLACE)


def problems(text: str) -> dict[str, str]:
    """place -> message; the description must be refused."""
    description, found = parse(text)
    assert description is None
    assert found
    places = [place for place, _ in found]
    assert len(places) == len(set(places)), f"one problem per place: {found}"
    return dict(found)


def with_signature(signature: str, event: str = 'type = "type"') -> str:
    return f"[signature]\n{signature}\n[event]\n{event}\n"


def test_a_valid_description_has_no_problem() -> None:
    description, found = parse(VALID)
    assert found == []
    assert description is not None
    assert description.scheme_name == "hmac"
    assert description.signature_headers == ("x-ledgerly-signature",)
    assert not description.signs_url


# Unknown keys and choices, with did-you-mean.


def test_unknown_keys_get_the_closest_known_one() -> None:
    found = problems(
        with_signature('scheme = "hmac"\nheader = "x"\nalgoritm = "sha256"', 'typ = "type"')
    )
    assert found[f"{PLACE}.signature.algoritm"] == 'unknown key (did you mean "algorithm"?)'
    assert found[f"{PLACE}.event.typ"] == 'unknown key (did you mean "type"?)'


def test_unknown_top_level_key() -> None:
    found = problems(VALID + '\n[singature]\nscheme = "none"\n')
    assert found[f"{PLACE}.singature"] == 'unknown key (did you mean "signature"?)'


def test_algorithm_outside_its_list_names_the_list() -> None:
    found = problems(with_signature('scheme = "hmac"\nheader = "x"\nalgorithm = "sha384"'))
    assert found[f"{PLACE}.signature.algorithm"] == '"sha384" is not one of sha1, sha256, sha512'


def test_close_misspelling_of_a_choice_gets_a_hint() -> None:
    found = problems(with_signature('scheme = "hmac"\nheader = "x"\nalgorithm = "sha265"'))
    assert found[f"{PLACE}.signature.algorithm"] == (
        '"sha265" is not one of sha1, sha256, sha512 (did you mean "sha256"?)'
    )


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("encoding", "base32", "hex, base64"),
        ("timestamp_unit", "seconds", "s, ms, iso8601"),
        ("key", "latin1", "utf8, base64, hex, whsec"),
    ],
)
def test_every_signature_choice_is_checked(key: str, value: str, allowed: str) -> None:
    signature = f'scheme = "hmac"\nheader = "x"\ntimestamp_header = "x-t"\n{key} = "{value}"'
    signature += '\nsigned = "{timestamp}.{body}"'
    found = problems(with_signature(signature))
    assert found[f"{PLACE}.signature.{key}"].startswith(f'"{value}" is not one of {allowed}')


def test_unknown_scheme() -> None:
    found = problems(with_signature('scheme = "hmacc"'))
    assert found[f"{PLACE}.signature.scheme"] == (
        '"hmacc" is not one of hmac, standard_webhooks, public_key, none (did you mean "hmac"?)'
    )


def test_public_key_algorithms_are_their_own_list() -> None:
    found = problems(with_signature('scheme = "public_key"\nheader = "x"\nalgorithm = "sha256"'))
    listed = "rsa-sha256, ecdsa-p256-sha256, ed25519"
    assert found[f"{PLACE}.signature.algorithm"] == (
        f'"sha256" is not one of {listed} (did you mean "rsa-sha256"?)'
    )


def test_amount_unit_choice() -> None:
    found = problems(with_signature('scheme = "none"', 'type = "type"\namount_unit = "cents"'))
    assert found[f"{PLACE}.event.amount_unit"] == '"cents" is not one of minor, major'


# Required keys and types.


def test_missing_sections() -> None:
    found = problems("[types]\n")
    assert found[f"{PLACE}.signature"].startswith("required: a table with scheme = one of hmac")
    assert found[f"{PLACE}.event"] == 'required: a table with at least type = "<expression>"'


def test_missing_scheme() -> None:
    found = problems(with_signature('header = "x"'))
    assert found[f"{PLACE}.signature.scheme"] == (
        "required: one of hmac, standard_webhooks, public_key, none"
    )


def test_hmac_needs_a_header_and_public_key_an_algorithm() -> None:
    found = problems(with_signature('scheme = "hmac"'))
    assert found[f"{PLACE}.signature.header"] == (
        "required for an hmac signature: the request header that carries the signature"
    )
    found = problems(with_signature('scheme = "public_key"\nheader = "x-sig"'))
    assert found[f"{PLACE}.signature.algorithm"] == (
        "required for a public_key signature: one of rsa-sha256, ecdsa-p256-sha256, ed25519"
    )


def test_event_needs_a_type() -> None:
    found = problems(with_signature('scheme = "none"', 'id = "id"'))
    assert found[f"{PLACE}.event.type"] == (
        "required: the expression that finds the provider's event type"
    )


def test_values_of_the_wrong_type() -> None:
    found = problems(with_signature('scheme = "hmac"\nheader = 3', "type = true"))
    assert found[f"{PLACE}.signature.header"] == "expected a string, got an integer"
    assert found[f"{PLACE}.event.type"] == "expected a string, got a boolean"


def test_sections_of_the_wrong_type() -> None:
    found = problems('signature = "hmac"\nevent = []\ntypes = 1\n')
    assert found[f"{PLACE}.signature"] == "expected a table, got a string"
    assert found[f"{PLACE}.event"] == "expected a table, got an array"
    assert found[f"{PLACE}.types"] == "expected a table, got an integer"


def test_keys_of_another_scheme_say_whose_they_are() -> None:
    found = problems(with_signature('scheme = "standard_webhooks"\nheader = "x"\nkey = "hex"'))
    assert found[f"{PLACE}.signature.header"].startswith(
        "only hmac and public_key signatures have a header"
    )
    assert found[f"{PLACE}.signature.key"].startswith("only hmac signatures have a key")
    found = problems(with_signature('scheme = "none"\nalgorithm = "sha256"'))
    assert found[f"{PLACE}.signature.algorithm"] == (
        "only hmac and public_key signatures have a algorithm"
        " (its sources authenticate with token and/or allow_ips)"
    )


def test_every_problem_is_reported_not_only_the_first() -> None:
    found = problems(
        with_signature(
            'scheme = "hmac"\nalgorithm = "md5"\nheader = "X Sig"\nsigned = "{bdy}"',
            'type = "a..b"\namount_unit = "x"\ntime = "nofunc(a)"',
        )
        + '[types]\n"x" = "payment.captured"\n'
    )
    assert set(found) == {
        f"{PLACE}.signature.algorithm",
        f"{PLACE}.signature.header",
        f"{PLACE}.signature.signed",
        f"{PLACE}.event.type",
        f"{PLACE}.event.amount_unit",
        f"{PLACE}.event.time",
        f"{PLACE}.types.x",
    }


# Header names and placeholders.


def test_header_names_are_http_tokens() -> None:
    found = problems(
        with_signature(
            'scheme = "hmac"\nheader = "X Sig"\ntimestamp_header = "x:t"\n'
            'signed = "{timestamp}.{body}"',
            'type = "header:Event Type"',
        )
    )
    token_only = "is not an HTTP header name (RFC 9110 token characters only)"
    assert found[f"{PLACE}.signature.header"] == f'"X Sig" {token_only}'
    assert found[f"{PLACE}.signature.timestamp_header"] == f'"x:t" {token_only}'
    assert found[f"{PLACE}.event.type"] == f'"Event Type" {token_only}'


def test_signed_header_placeholder_names_a_valid_header() -> None:
    found = problems(with_signature('scheme = "hmac"\nheader = "x"\nsigned = "{header:a b}{body}"'))
    assert found[f"{PLACE}.signature.signed"] == (
        '{header:a b}: "a b" is not an HTTP header name (RFC 9110 token characters only)'
    )


def test_unknown_placeholders() -> None:
    found = problems(
        with_signature('scheme = "hmac"\nheader = "x"\nformat = "{sig}"\nsigned = "{bdy}"')
    )
    assert found[f"{PLACE}.signature.format"] == (
        "unknown placeholder {sig} (format knows {signature}, {timestamp})"
    )
    assert found[f"{PLACE}.signature.signed"] == (
        "unknown placeholder {bdy} (signed knows {body}, {timestamp}, {url}, {header:NAME})"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sha256=", "must contain {signature} exactly once"),
        ("{signature},{signature}", "must contain {signature} exactly once"),
        ("{signature", "a brace that opens or closes no placeholder"),
        ("t={timestamp},t={signature}", "names the same key twice"),
    ],
)
def test_format_mistakes(text: str, message: str) -> None:
    found = problems(with_signature(f'scheme = "hmac"\nheader = "x"\nformat = "{text}"'))
    assert found[f"{PLACE}.signature.format"] == message


def test_signed_must_cover_the_body() -> None:
    found = problems(with_signature('scheme = "hmac"\nheader = "x"\nsigned = "{url}"'))
    assert found[f"{PLACE}.signature.signed"].startswith("must contain {body}")


def test_signed_timestamp_needs_a_source() -> None:
    found = problems(with_signature('scheme = "hmac"\nheader = "x"\nsigned = "{timestamp}.{body}"'))
    assert found[f"{PLACE}.signature.signed"] == (
        "has {timestamp}, but format has no {timestamp} and no timestamp_header is set"
    )


def test_a_timestamp_read_must_be_signed() -> None:
    found = problems(
        with_signature('scheme = "hmac"\nheader = "x"\nformat = "t={timestamp},v1={signature}"')
    )
    assert found[f"{PLACE}.signature.signed"].startswith("has no {timestamp}: the timestamp")


def test_two_sources_of_the_timestamp() -> None:
    found = problems(
        with_signature(
            'scheme = "hmac"\nheader = "x"\nformat = "t={timestamp},v1={signature}"\n'
            'timestamp_header = "x-t"\nsigned = "{timestamp}.{body}"'
        )
    )
    assert found[f"{PLACE}.signature.timestamp_header"] == (
        "format already has {timestamp}: give one of the two"
    )


def test_timestamp_unit_without_a_timestamp() -> None:
    found = problems(with_signature('scheme = "hmac"\nheader = "x"\ntimestamp_unit = "ms"'))
    assert found[f"{PLACE}.signature.timestamp_unit"].startswith("no timestamp to read")


def test_url_and_signed_headers_are_allowed() -> None:
    description, found = parse(
        with_signature(
            'scheme = "hmac"\nheader = "x-sig"\nsigned = "{url}|{header:X-Request-Id}|{body}"'
        )
    )
    assert found == []
    assert description is not None
    assert description.signs_url


# Expressions.


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("data..amount", "not a JMESPath expression: Expecting:"),
        ("data.amount[", "not a JMESPath expression: incomplete expression"),
        ('data."amount', 'not a JMESPath expression: Unclosed " delimiter at column 6'),
        ("lenght(data)", "no JMESPath function lenght() (did you mean length()?)"),
        ("length(a, b)", "length() takes 1 argument, not 2"),
        ("", "the expression is empty"),
    ],
)
def test_jmespath_is_compiled_when_the_description_is_read(expression: str, message: str) -> None:
    found = problems(with_signature('scheme = "none"', f'type = "type"\namount = {expression!r}'))
    assert found[f"{PLACE}.event.amount"].startswith(message)


def test_each_is_an_expression_over_the_body() -> None:
    found = problems(with_signature('scheme = "none"', 'type = "type"\neach = "header:x-events"'))
    assert found[f"{PLACE}.event.each"] == (
        "expected a JMESPath expression over the body, not a header"
    )


def test_with_each_the_id_cannot_be_a_header() -> None:
    found = problems(
        with_signature('scheme = "none"', 'type = "type"\neach = "events"\nid = "header:x-id"')
    )
    assert found[f"{PLACE}.event.id"].startswith("with each, the id must come from each event")


# The type table.


def test_canonical_targets_must_exist() -> None:
    found = problems(
        VALID
        + '"a" = "payment.captured"\n"b" = "paymnt.succeeded"\n"c" = "payment"\n'
        + '"d" = 3\n'
    )
    assert found[f"{PLACE}.types.a"] == (
        '"payment.captured" is not a canonical type (did you mean "payment.expired"?)'
    )
    assert found[f"{PLACE}.types.b"] == (
        '"paymnt.succeeded" is not a canonical type: no kind "paymnt" (did you mean "payment"?)'
        " (kinds: account, transfer, payment, card, consent, transaction, workflow, system)"
    )
    assert found[f"{PLACE}.types.c"] == (
        '"payment" is not a canonical type: expected "<kind>.<action>"'
    )
    assert found[f"{PLACE}.types.d"] == "expected a canonical type, got an integer"


def test_globs_in_the_type_table() -> None:
    found = problems(
        VALID + '"a*b" = "payment.succeeded"\n"c" = "payment.*"\n"d*" = "*"\n"e*" = "paymen.*"\n'
    )
    assert found[f'{PLACE}.types."a*b"'] == 'a "*" may only end a provider type (a prefix)'
    assert found[f"{PLACE}.types.c"] == (
        'a canonical type ending in "*" needs a key ending in "*" (it receives the rest)'
    )
    assert found[f'{PLACE}.types."d*"'] == '"*": expected "<kind>.*" (the rest of the type is kept)'
    assert found[f'{PLACE}.types."e*"'].startswith('"paymen.*" is not a canonical type: no kind')


def test_open_kinds_take_any_action() -> None:
    description, found = parse(VALID + '"wf.done" = "workflow.whatever_it_likes"\n')
    assert found == []
    assert description is not None


def test_a_place_prefix_is_kept_as_given() -> None:
    _, found = parse_description({"signature": {"scheme": "x"}, "event": {}}, "presets.stripe")
    assert {place for place, _ in found} == {
        "presets.stripe.signature.scheme",
        "presets.stripe.event.type",
    }


def test_source_settings_are_not_part_of_a_description() -> None:
    found = problems(with_signature('scheme = "hmac"\nheader = "x"\nsecret = "s"'))
    assert found[f"{PLACE}.signature.secret"] == (
        "a source setting: set it in the [sources.<name>] that use this provider"
    )

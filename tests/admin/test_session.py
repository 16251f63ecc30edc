"""The operator page's session cookie and CSRF token (gateway/admin/session.py), on real
Starlette requests built from headers: signed, expiring, keyed by the admin tokens."""

from __future__ import annotations

from starlette.requests import Request

from adapters.source import Secret
from gateway.admin.session import (
    COOKIE_NAME,
    SESSION_SECONDS,
    csrf_is_valid,
    csrf_token_for,
    new_session,
    read_session,
    session_is_valid,
    token_is_valid,
)

TOKENS = (Secret("adm-first-token-0123456789"),)
NOW = 1_800_000_000.0


def request_with(cookie: str | None) -> Request:
    headers = [] if cookie is None else [(b"cookie", f"{COOKIE_NAME}={cookie}".encode())]
    return Request({"type": "http", "method": "POST", "path": "/admin/", "headers": headers})


def test_a_new_session_reads_back_until_it_expires() -> None:
    session = new_session(TOKENS, now=NOW)
    request = request_with(session.cookie_value)
    assert read_session(request, TOKENS, now=NOW + SESSION_SECONDS - 1) == session
    assert read_session(request, TOKENS, now=NOW + SESSION_SECONDS) is None
    assert session_is_valid(request, TOKENS)


def test_the_cookie_never_holds_the_token() -> None:
    assert TOKENS[0].reveal() not in new_session(TOKENS).cookie_value


def test_a_tampered_cookie_is_refused() -> None:
    session = new_session(TOKENS, now=NOW)
    session_id, expires, signature = session.cookie_value.split(".")
    for forged in (
        f"{session_id}.{int(expires) + 86400}.{signature}",  # a longer life
        f"x{session_id}.{expires}.{signature}",  # another id
        f"{session_id}.{expires}.{signature[:-1]}{'B' if signature[-1] == 'A' else 'A'}",
        f"{session_id}.{expires}",
        "",
    ):
        assert read_session(request_with(forged), TOKENS, now=NOW) is None


def test_every_worker_accepts_the_cookie_and_a_new_token_logs_everyone_out() -> None:
    # Derived from the tokens, not drawn per process: any worker of `serve --workers N`
    # computes the same key.
    cookie = new_session(TOKENS, now=NOW).cookie_value
    same_tokens = (Secret(TOKENS[0].reveal()),)
    assert read_session(request_with(cookie), same_tokens, now=NOW) is not None
    rotated = (Secret("adm-rotated-token-9876543210"),)
    assert read_session(request_with(cookie), rotated, now=NOW) is None
    assert read_session(request_with(cookie), (), now=NOW) is None


def test_the_csrf_token_belongs_to_its_session_only() -> None:
    mine = new_session(TOKENS)
    theirs = new_session(TOKENS)
    request = request_with(mine.cookie_value)
    assert csrf_is_valid(request, csrf_token_for(mine))
    assert not csrf_is_valid(request, csrf_token_for(theirs))
    assert not csrf_is_valid(request, None)
    assert not csrf_is_valid(request, "")
    assert not csrf_is_valid(request_with(None), csrf_token_for(mine))


def test_token_is_valid_takes_any_configured_token_and_nothing_else() -> None:
    tokens = (*TOKENS, Secret("adm-second-token-abcdefghij"))
    assert token_is_valid("adm-first-token-0123456789", tokens)
    assert token_is_valid("adm-second-token-abcdefghij", tokens)
    assert not token_is_valid("adm-first-token-012345678", tokens)
    assert not token_is_valid("", tokens)
    assert not token_is_valid("adm-first-token-0123456789", ())

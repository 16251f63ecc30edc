"""The event id derivation is the one the README documents, so anyone can recompute it."""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from schemas.event import canonical_event_id

RFC4648 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
CROCKFORD = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def documented_id(source: str, key: str) -> str:
    digest = hashlib.sha256(f"{source}\0{key}".encode()).digest()
    encoded = base64.b32encode(digest[:16])[:26]
    return "evt_" + encoded.translate(bytes.maketrans(RFC4648, CROCKFORD)).decode()


@given(source=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), key=st.text())
def test_event_id_is_the_documented_derivation(source: str, key: str) -> None:
    assert canonical_event_id(source, key) == documented_id(source, key)


def test_event_id_depends_on_source_and_key() -> None:
    ids = {
        canonical_event_id("a", "k"),
        canonical_event_id("b", "k"),
        canonical_event_id("a", "k2"),
        canonical_event_id("a\0", "k"),
    }
    assert len(ids) == 4
    assert canonical_event_id("finfusion-main", "evt_123") == canonical_event_id(
        "finfusion-main", "evt_123"
    )

"""The file subscriber: one JSON line per delivery, on disk before it counts as delivered."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec
import pytest

from gateway.delivery.file import FileTransport
from gateway.delivery.transport import OutboundMessage


def message(n: int) -> OutboundMessage:
    return OutboundMessage(
        webhook_id=f"evt_{n}",
        webhook_timestamp=1_700_000_000 + n,
        webhook_signature=None if n % 2 else f"v1,sig{n}",
        body=b'{"specversion":"1.0","id":"evt_%d"}' % n,
    )


def test_each_delivery_is_one_line_with_the_event_embedded(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()

    async def scenario() -> None:
        transport = FileTransport(tmp_path / "out" / "events.jsonl")
        results = [await transport.send(message(n)) for n in range(3)]
        await transport.close()
        assert {result.outcome for result in results} == {"delivered"}

    asyncio.run(scenario())
    lines = [msgspec.json.decode(line) for line in (tmp_path / "out" / "events.jsonl").open("rb")]
    assert [line["webhook-id"] for line in lines] == ["evt_0", "evt_1", "evt_2"]
    assert lines[0] == {
        "webhook-id": "evt_0",
        "webhook-timestamp": 1_700_000_000,
        "webhook-signature": "v1,sig0",
        "event": {"specversion": "1.0", "id": "evt_0"},
    }
    assert lines[1]["webhook-signature"] is None


def test_concurrent_deliveries_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counting, not faking: every call still reaches the real fsync.
    calls = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)

    async def scenario() -> None:
        transport = FileTransport(tmp_path / "events.jsonl")
        results = await asyncio.gather(*(transport.send(message(n)) for n in range(200)))
        await transport.close()
        assert {result.outcome for result in results} == {"delivered"}

    asyncio.run(scenario())
    assert len((tmp_path / "events.jsonl").read_bytes().splitlines()) == 200
    assert calls < 20, f"200 concurrent deliveries took {calls} fsyncs"


def test_an_unwritable_path_is_a_retry_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").mkdir()  # a directory where the file should be

    async def scenario() -> str:
        transport = FileTransport(tmp_path / "events.jsonl")
        result = await transport.send(message(1))
        await transport.close()
        return result.outcome

    assert asyncio.run(scenario()) == "retry"


def test_a_missing_directory_is_a_retry_and_is_not_created(tmp_path: Path) -> None:
    async def scenario() -> str:
        transport = FileTransport(tmp_path / "missing" / "events.jsonl")
        result = await transport.send(message(1))
        await transport.close()
        return result.outcome

    assert asyncio.run(scenario()) == "retry"
    assert not (tmp_path / "missing").exists()

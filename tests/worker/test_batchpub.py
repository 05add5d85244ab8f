"""One-write batch publishing against ``Client.publish``, on a real nats-server."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats import errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from spark_ml.worker.natsio import batchpub, writer


async def _collect(nc: Client, subject: str, n: int, publish: object) -> list[tuple[str, bytes, dict[str, str] | None]]:
    got: list[Msg] = []
    done = asyncio.Event()

    async def on(msg: Msg) -> None:
        got.append(msg)
        if len(got) == n:
            done.set()

    sub = await nc.subscribe(subject, cb=on)
    await nc.flush()
    await publish  # type: ignore[misc]
    await asyncio.wait_for(done.wait(), 5)
    await sub.unsubscribe()
    return [(m.subject, m.data, m.headers) for m in got]


def _payloads(n: int) -> list[bytes]:
    return [b"", b"\r\nPUB x 1\r\n", bytes(range(256)) * 3] + [f"p{i}".encode() for i in range(n - 3)]


async def test_frames_equal_what_publish_delivers(nc: Client, uid: str) -> None:
    assert writer.can_write_raw(nc)
    subject = f"t.{uid}"
    payloads = _payloads(300)
    ids = [None if i % 3 == 0 else f" id-{i} " for i in range(len(payloads))]

    async def reference() -> None:
        for p, mid in zip(payloads, ids, strict=True):
            await nc.publish(subject, p, headers={"Nats-Msg-Id": mid} if mid else None)

    want = await _collect(nc, subject, len(payloads), reference())
    got = await _collect(nc, subject, len(payloads), batchpub.publish_batch(nc, subject, payloads, ids))
    assert got == want
    plain = await _collect(nc, subject, len(payloads), batchpub.publish_batch(nc, subject, payloads))
    assert plain == [(s, d, None) for s, d, _ in want]


async def test_fallback_path_delivers_the_same(nc: Client, uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    subject = f"t.{uid}"
    payloads = _payloads(50)
    fast = await _collect(nc, subject, len(payloads), batchpub.publish_batch(nc, subject, payloads))
    monkeypatch.setattr(writer, "can_write_raw", lambda nc: False)
    slow = await _collect(nc, subject, len(payloads), batchpub.publish_batch(nc, subject, payloads))
    assert fast == slow


async def test_refusals_match_publish(nc: Client, nats_url: str, uid: str) -> None:
    too_big = b"x" * (nc.max_payload + 1)
    with pytest.raises(errors.MaxPayloadError):
        await nc.publish(f"t.{uid}", too_big)
    with pytest.raises(errors.MaxPayloadError):
        await batchpub.publish_batch(nc, f"t.{uid}", [b"ok", too_big])
    with pytest.raises(errors.BadSubjectError):
        await batchpub.publish_batch(nc, "", [b"ok"])
    other = await nats.connect(nats_url)
    await other.close()
    with pytest.raises(errors.ConnectionClosedError):
        await batchpub.publish_batch(other, f"t.{uid}", [b"ok"])


async def test_msg_ids_deduplicate_in_a_stream(nc: Client, uid: str) -> None:
    js = nc.jetstream()
    subject = f"dedupe.{uid}"
    await js.add_stream(name=f"D{uid}".replace("-", "")[:30], subjects=[subject])
    payloads = [f"m{i}".encode() for i in range(20)]
    ids = [f"id-{i}" for i in range(20)]
    await batchpub.publish_batch(nc, subject, payloads, ids)
    await batchpub.publish_batch(nc, subject, payloads, ids)  # a redelivery publishes the same ids again
    # an acknowledged publish behind them on the same connection: the stream has stored all before it
    await js.publish(subject, b"last")
    info = await js.stream_info(f"D{uid}".replace("-", "")[:30])
    assert info.state.messages == 21


async def test_header_blocks_equal_what_publish_delivers(nc: Client, uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # One block shared by the batch, one block per message (some with ids): Client.publish's headers exactly
    subject = f"t.{uid}"
    payloads = _payloads(60)
    shared = {"Content-Type": "application/msgpack"}
    each = [{"Content-Type": "application/json", "traceparent": f"00-{i:032x}-{i:016x}-01"} for i in range(60)]
    ids = [None if i % 4 == 0 else f"id-{i}" for i in range(60)]

    async def reference(headers: list[dict[str, str]], with_ids: bool) -> None:
        for p, h, mid in zip(payloads, headers, ids, strict=True):
            await nc.publish(subject, p, headers={**h, "Nats-Msg-Id": mid} if with_ids and mid else h)

    cases: list[tuple[list[dict[str, str]], writer.Heads, bool]] = [
        ([shared] * 60, writer.head(shared), False),
        (each, [writer.head(h) for h in each], False),
        (each, [writer.head(h) for h in each], True),
        ([shared] * 60, writer.head(shared), True),
    ]
    for headers, heads, with_ids in cases:
        want = await _collect(nc, subject, 60, reference(headers, with_ids))
        got = await _collect(
            nc, subject, 60, batchpub.publish_batch(nc, subject, payloads, ids if with_ids else None, heads)
        )
        assert got == want
        with monkeypatch.context() as m:
            m.setattr(writer, "can_write_raw", lambda nc: False)
            slow = await _collect(
                nc, subject, 60, batchpub.publish_batch(nc, subject, payloads, ids if with_ids else None, heads)
            )
        assert slow == want


async def test_a_header_block_counts_against_the_payload_limit(nc: Client, uid: str) -> None:
    block = writer.head({"Content-Type": "application/msgpack"})
    fits = b"x" * (nc.max_payload - len(block) - 2)
    await batchpub.publish_batch(nc, f"t.{uid}", [fits], heads=block)
    with pytest.raises(errors.MaxPayloadError):
        await batchpub.publish_batch(nc, f"t.{uid}", [fits + b"x"], heads=block)
    with pytest.raises(errors.MaxPayloadError):
        await batchpub.publish_batch(nc, f"t.{uid}", [b"ok", fits + b"x"], heads=[block, block])
    assert nc.is_connected

"""Direct routing of a core subscription from nats-py's parser, against the regular callback path."""

from __future__ import annotations

import asyncio

import msgpack
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from spark_ml.core.engine import Engine
from spark_ml.core.models import BaselineModel
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsio import directsub, fastparser, router
from spark_ml.worker.pipeline.publish import NatsOutput
from spark_ml.worker.pipeline.stream import StreamProcessor
from tests.support.natsync import synced

Seen = list[tuple[str, bytes, dict[str, str] | None]]


async def _send_mix(nc: Client, base: str) -> int:
    await nc.publish(f"{base}.a", b"plain")
    await nc.publish(f"{base}.b", b'{"j":1}', headers={"Content-Type": "application/json"})
    await nc.publish(f"{base}.c", b"", headers={"X-Other": "1"})
    await nc.publish(f"{base}.d", bytes(range(256)))
    await nc.flush()
    return 4


# Header blocks as they cross the wire, common and not: the common ones take the parser's synchronous route, the
# rest nats-py's own reading; a direct route must see the same headers either way as a regular callback does.
_BLOCKS = [
    b"NATS/1.0\r\nContent-Type: application/msgpack\r\n\r\n",
    b"NATS/1.0\r\nContent-Type: application/msgpack\r\n"
    b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
    b"NATS/1.0\r\nA: 1\r\nA: 2\r\nb: x  y\r\n\r\n",  # a repeated key: the last wins
    b"NATS/1.0\r\nContent-Type:\tapplication/json \r\n\r\n",  # odd whitespace
    b"NATS/1.0\r\nX-Name: \xc3\xa9t\xc3\xa9\r\n\r\n",  # not ASCII
    b"NATS/1.0\r\n\r\n",  # no headers at all
    b"NATS/1.0 408 Request Timeout\r\nA: b\r\n\r\n",  # an inline status
]


async def _send_blocks(nc: Client, base: str) -> int:
    """HPUB frames with the blocks above as sent (``publish`` would write only the common shape)."""
    for i, block in enumerate(_BLOCKS):
        payload = b"p%d" % i
        subject = f"{base}.h{i}".encode()
        await nc._send_command(
            b"HPUB %s %d %d\r\n%s%s\r\n" % (subject, len(block), len(block) + len(payload), block, payload)
        )
    await nc.flush()
    return len(_BLOCKS)


async def _wait(seen: Seen, n: int) -> None:
    async def until() -> None:
        while len(seen) < n:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(until(), 5)


async def test_installed_nats_py_is_supported(nc: Client) -> None:
    # A nats-py upgrade that changes the internal this relies on fails here, not silently in production.
    assert router.supported(nc)


@pytest.mark.parametrize("sync", [False, True], ids=["routed", "routed-and-sync"])
async def test_direct_route_sees_what_a_callback_sees(nc: Client, nats_url: str, uid: str, sync: bool) -> None:
    base = f"d.{uid}"
    direct_seen: Seen = []
    regular_seen: Seen = []
    taken_sync: list[str] = []

    async def direct(subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        direct_seen.append((subject, data, headers))

    def fast(subject: bytes, data: bytes, headers: dict[str, str] | None) -> None:
        taken_sync.append(subject.decode())
        direct_seen.append((subject.decode(), data, headers))

    async def regular(msg: Msg) -> None:
        regular_seen.append((msg.subject, msg.data, msg.headers or None))

    if sync:
        assert fastparser.install(nc)
    sub, routed = await directsub.subscribe_direct(
        nc, f"{base}.>", queue="", handler=direct, fast=fast if sync else None
    )
    assert routed
    other = await nats.connect(nats_url)
    try:
        await other.subscribe(f"{base}.>", cb=regular)
        await other.flush()
        # a second, regular subscription on the routed client keeps working too
        also: list[Msg] = []

        async def keep(msg: Msg) -> None:
            also.append(msg)

        await nc.subscribe(f"{base}.>", cb=keep)
        await synced(nc)  # both subscriptions of nc are known to the server before `other` publishes
        n = await _send_mix(other, base)
        n += await _send_blocks(other, base)
        await _wait(direct_seen, n)
        await _wait(regular_seen, n)
        assert direct_seen == regular_seen
        assert (regular_seen[1][2] or {}).get("Content-Type") == "application/json"
        assert regular_seen[6][2] == {"A": "2", "b": "x  y"}
        assert regular_seen[8][2] == {"X-Name": "été"}
        assert regular_seen[9][2] is None
        assert regular_seen[10][2] is not None and regular_seen[10][2]["Status"] == "408"
        # the common blocks (and no block) were taken synchronously, every other block by nats-py's routine
        common = [f"{base}.{x}" for x in ("a", "b", "c", "d", "h0", "h1", "h2")]
        assert taken_sync == (common if sync else [])
        await asyncio.wait_for(_until(lambda: len(also) == n), 5)
        # unrouted and unsubscribed: nothing more arrives
        await sub.unsubscribe()
        directsub.unroute(nc, sub)
        await _send_mix(other, base)
        await asyncio.sleep(0.2)
        assert len(direct_seen) == n
    finally:
        await other.close()


async def _until(cond: object) -> None:
    while not cond():  # type: ignore[operator]
        await asyncio.sleep(0.005)


async def test_unsupported_client_falls_back_to_a_callback(
    nc: Client, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router, "supported", lambda nc: False)
    seen: Seen = []

    async def handler(subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        seen.append((subject, data, headers))

    _, routed = await directsub.subscribe_direct(nc, f"f.{uid}.>", queue="q", handler=handler)
    assert not routed
    n = await _send_mix(nc, f"f.{uid}")
    await _wait(seen, n)
    assert [s[0] for s in seen] == [f"f.{uid}.{x}" for x in "abcd"]


async def test_full_shard_applies_backpressure_and_closing_drops_are_counted(nc: Client) -> None:
    metrics = Metrics()
    processor = StreamProcessor(Engine(BaselineModel()), metrics, NatsOutput(nc), shards=1, queue_max=2)

    def snap(i: int) -> bytes:
        return msgpack.packb({"ts": i, "mid": 1.0, "symbol": "S"})

    # shards not started: nothing leaves the queue, so the third snapshot waits for room
    for i in range(2):
        await processor.on_raw("market.snapshot", snap(i), None)
    waiting = asyncio.create_task(processor.on_raw("market.snapshot", snap(2), None))
    await asyncio.sleep(0.05)
    assert not waiting.done() and processor.pool.depths() == [2]
    processor.pool.start()  # the shard drains, the waiting snapshot gets its place
    await asyncio.wait_for(waiting, 5)
    await processor.close(5)
    await processor.on_raw("market.snapshot", snap(3), None)  # after shutdown: counted, not silent
    assert processor.dropped == 1
    assert metrics.slow_consumer_drops._value.get() == 1


async def test_fast_route_takes_messages_without_or_with_common_headers_synchronously(
    nc: Client, nats_url: str, uid: str
) -> None:
    assert fastparser.install(nc)
    base = f"s.{uid}"
    fast_seen: list[tuple[bytes, bytes, dict[str, str] | None]] = []
    slow_seen: Seen = []
    waited: list[bytes] = []

    def fast(subject: bytes, data: bytes, headers: dict[str, str] | None) -> asyncio.Future[None] | None:
        fast_seen.append((subject, data, headers))
        if data == b"plain":  # ask the parser to wait once, as a full shard does
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def room() -> None:
                waited.append(data)
                fut.set_result(None)

            asyncio.get_running_loop().call_later(0.05, room)
            return fut
        return None

    async def slow(subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        slow_seen.append((subject, data, headers))

    sub, routed = await directsub.subscribe_direct(nc, f"{base}.>", queue="", handler=slow, fast=fast)
    assert routed
    await synced(nc)
    before = nc.stats["in_msgs"]  # after the sync's own reply
    other = await nats.connect(nats_url)
    try:
        n = await _send_mix(other, base)
        await other._send_command(b"HPUB %s.e 28 30\r\nNATS/1.0\r\nX-Odd:\tspaced \r\n\r\nno\r\n" % base.encode())
        await other.flush()
        n += 1
        await _until(lambda: len(fast_seen) + len(slow_seen) == n)
        assert fast_seen == [
            (f"{base}.a".encode(), b"plain", None),
            (f"{base}.b".encode(), b'{"j":1}', {"Content-Type": "application/json"}),
            (f"{base}.c".encode(), b"", {"X-Other": "1"}),
            (f"{base}.d".encode(), bytes(range(256)), None),
        ]
        assert slow_seen == [(f"{base}.e", b"no", {"X-Odd": "spaced"})]  # a block nats-py reads: the async route
        assert waited == [b"plain"]
        assert nc.stats["in_msgs"] - before == n
        await sub.unsubscribe()
        directsub.unroute(nc, sub)
        assert isinstance(nc._ps, fastparser.FastParser) and sub._id not in nc._ps.direct
    finally:
        await other.close()


async def test_sync_intake_queues_refuses_and_waits_for_room(nc: Client) -> None:
    metrics = Metrics()
    processor = StreamProcessor(Engine(BaselineModel()), metrics, NatsOutput(nc), shards=1, queue_max=2)

    def snap(i: int) -> bytes:
        return msgpack.packb({"ts": i, "mid": 1.0, "symbol": "S"})

    assert processor.on_raw_sync(b"market.snapshot", snap(0)) is None
    assert processor.on_raw_sync(b"market.snapshot", snap(1)) is None
    wait = processor.on_raw_sync(b"market.snapshot", snap(2))  # full: the caller must await room
    assert wait is not None
    task = asyncio.ensure_future(wait)
    await asyncio.sleep(0.05)
    assert not task.done()
    processor.pool.start()
    await asyncio.wait_for(task, 5)
    bad = processor.on_raw_sync(b"market.snapshot", b"\xc1 not msgpack")
    assert bad is not None
    await bad  # the dead letter
    assert processor.dead_lettered == 1
    await processor.close(5)
    assert processor.published == 3

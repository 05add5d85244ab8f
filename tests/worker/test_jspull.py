"""PullConsumer on a real nats-server: order, the in-flight bound, statuses (408, 409, 100), recovery, stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from spark_ml.worker.natsio import jsadmin, router, writer
from spark_ml.worker.natsio.jspull import JsMsg, PullConsumer
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import connected

STREAM, CONSUMER, SUBJECT = "PULLTEST", "pull-test", "pt.x"


async def _setup(nc: Client, **consumer: Any) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=["pt.>"], storage=StorageType.FILE))
    await js.add_consumer(
        STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=30, **consumer)
    )


async def _publish(nc: Client, n: int, start: int = 0, attempts: int = 1) -> None:
    js = nc.jetstream()
    for i in range(start, start + n):
        for attempt in range(attempts):  # a restarted server's stream may need a moment before it answers
            try:
                await js.publish(SUBJECT, str(i).encode(), timeout=1.0)
                break
            except nats.errors.TimeoutError:
                if attempt == attempts - 1:
                    raise


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)


class Sink:
    """Collects delivered messages; acks each batch it collects when ``auto_ack``."""

    def __init__(self) -> None:
        self.msgs: list[JsMsg] = []
        self.peak_in_flight = 0
        self.consumer: PullConsumer | None = None
        self.reached: dict[int, asyncio.Event] = {}
        """Events set when that many messages have arrived (to act at a point of the stream, not after a poll)."""

    async def on_msg(self, msg: JsMsg) -> None:
        self.msgs.append(msg)
        reached = self.reached.get(len(self.msgs))
        if reached is not None:
            reached.set()
        c = self.consumer
        if c is not None:
            self.peak_in_flight = max(self.peak_in_flight, c.unsettled + c.requested)

    def values(self) -> list[int]:
        return [int(m.data) for m in self.msgs]


@pytest.fixture
async def pull_factory(nc: Client) -> AsyncIterator[Callable[..., Awaitable[tuple[PullConsumer, Sink]]]]:
    made: list[PullConsumer] = []

    async def make(client: Client | None = None, **kwargs: Any) -> tuple[PullConsumer, Sink]:
        sink = Sink()
        options: dict[str, Any] = {"max_in_flight": 64, "batch": 16, "ack_wait_s": 30.0}
        options.update(kwargs)
        consumer = PullConsumer(client or nc, STREAM, CONSUMER, sink.on_msg, **options)
        sink.consumer = consumer
        await consumer.start()
        made.append(consumer)
        return consumer, sink

    yield make
    for consumer in made:
        await consumer.stop()


@contextlib.asynccontextmanager
async def _acking(consumer: PullConsumer, sink: Sink) -> AsyncIterator[None]:
    """While the block runs, acks whatever arrived, a batch per turn, as the worker's pool does."""
    stop = asyncio.Event()

    async def acker() -> None:
        done = 0
        while not stop.is_set():
            if len(sink.msgs) > done:
                batch = sink.msgs[done:]
                done += len(batch)
                await consumer.settle(batch)
            await asyncio.sleep(0.001)

    task = asyncio.create_task(acker())
    try:
        yield
    finally:
        stop.set()
        await task


async def _take_all(consumer: PullConsumer, sink: Sink, n: int, timeout: float) -> None:
    """Ack as the pool does until ``n`` messages arrived, and a moment more for the last acks to leave."""
    async with _acking(consumer, sink):
        await _until(lambda: len(sink.msgs) >= n, timeout, f"{n} delivered")
        await asyncio.sleep(0.2)


async def test_everything_delivered_in_order_and_acked_with_in_flight_bounded(nc: Client, pull_factory) -> None:
    # Given a durable consumer with 2000 messages waiting
    await _setup(nc)
    await _publish(nc, 2000)
    # When our pull consumer (at most 64 in flight, requests of 16) takes them and acks batch by batch
    consumer, sink = await pull_factory()
    await _take_all(consumer, sink, 2000, 20)
    # Then each is delivered once, in stream order, and the bound held throughout
    assert sink.values() == list(range(2000))
    assert [m.seq for m in sink.msgs] == list(range(1, 2001))
    assert sink.peak_in_flight <= 64
    # And the server has every one acknowledged
    await _until(lambda: consumer.unsettled == 0, 5, "all settled")
    info = await nc.jetstream().consumer_info(STREAM, CONSUMER)
    assert info.ack_floor.stream_seq == 2000 and info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_unsettled_messages_stop_the_requests_until_settled(nc: Client, pull_factory) -> None:
    await _setup(nc)
    await _publish(nc, 500)
    # Given nobody acks: delivery stops at the in-flight bound, and the server agrees on what is pending
    consumer, sink = await pull_factory()
    await _until(lambda: len(sink.msgs) == 64, 5, "64 delivered")
    await asyncio.sleep(0.5)
    assert len(sink.msgs) == 64 and consumer.requested == 0
    info = await nc.jetstream().consumer_info(STREAM, CONSUMER)
    assert info.num_ack_pending == 64
    # When 32 are acked (one write), 32 more come, and no more
    await consumer.settle(sink.msgs[:32])
    await _until(lambda: len(sink.msgs) == 96, 5, "96 delivered")
    await asyncio.sleep(0.3)
    assert len(sink.msgs) == 96
    assert sink.values() == list(range(96))


async def test_expired_requests_are_renewed_and_heartbeats_arrive(nc: Client, pull_factory) -> None:
    # Given an empty stream and short-lived requests (0.5 s, heartbeat every 0.2 s)
    await _setup(nc)
    consumer, sink = await pull_factory(expires_s=0.5, heartbeat_s=0.2)
    # When nothing arrives for 1.5 s: requests expire (408) and are renewed; idle ones heartbeat (100)
    await asyncio.sleep(1.5)
    assert consumer.statuses.get(408, 0) >= 2
    assert consumer.statuses.get(100, 0) >= 1
    # 1.5 s is three expiries: the last 408s may have just come in, their renewal a moment behind them
    await _until(lambda: consumer.requested > 0, 0.3, "requests renewed")
    assert 0 < consumer.requested <= 64
    # Then a message published now is delivered at once
    t0 = time.monotonic()
    await _publish(nc, 1)
    await _until(lambda: len(sink.msgs) == 1, 2, "delivered")
    assert time.monotonic() - t0 < 0.5


async def test_a_refused_batch_size_is_lowered_to_the_consumer_limit(nc: Client, pull_factory) -> None:
    # Given a consumer that takes requests of at most 8 (nats-py cannot set max_batch: raw API request)
    await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=["pt.>"], storage=StorageType.FILE))
    config = {"durable_name": CONSUMER, "ack_policy": "explicit", "max_batch": 8}
    reply = await nc.request(
        f"$JS.API.CONSUMER.CREATE.{STREAM}.{CONSUMER}", json.dumps({"stream_name": STREAM, "config": config}).encode()
    )
    assert b'"max_batch":8' in reply.data
    # When our requests of 16 are refused (409 Exceeded MaxRequestBatch of 8)
    consumer, sink = await pull_factory()
    await _until(lambda: consumer.statuses.get(409, 0) >= 1, 5, "a 409")
    # Then the consumer asks for 8 at a time from then on, and messages flow
    assert consumer.batch == 8
    async with _acking(consumer, sink):
        await _publish(nc, 100)
        await _until(lambda: len(sink.msgs) >= 100, 10, "100 delivered")
    assert sink.values() == list(range(100))


async def test_delivery_goes_on_when_the_server_keeps_fewer_requests(nc: Client, pull_factory) -> None:
    # Given a consumer keeping one waiting request: nats-server 2.15 drops the others of ours silently (it
    # answers 409 Exceeded MaxWaiting only to requests without heartbeats), so fewer are open than counted
    await _setup(nc, max_waiting=1)
    consumer, sink = await pull_factory()
    await asyncio.sleep(0.2)
    async with _acking(consumer, sink):
        # When messages arrive, they are delivered through the one request the server kept, and the next
        await _publish(nc, 300)
        await _until(lambda: len(sink.msgs) >= 300, 10, "300 delivered")
    assert sink.values() == list(range(300))


async def test_a_deleted_consumer_is_recreated_through_recover(nc: Client, pull_factory) -> None:
    await _setup(nc)
    js = nc.jetstream()
    recovered: list[float] = []

    async def recover() -> None:
        recovered.append(time.monotonic())
        await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT))

    consumer, sink = await pull_factory(recover=recover)
    await asyncio.sleep(0.2)  # requests are waiting on the server
    # When the consumer is deleted under them (409 Consumer Deleted, or no responders for new requests)
    await js.delete_consumer(STREAM, CONSUMER)
    await _until(lambda: bool(recovered), 5, "recover called")
    # Then the re-created consumer delivers what is published next
    await _publish(nc, 5)
    await _until(lambda: len(sink.msgs) >= 5, 10, "delivered after re-creation")
    assert sink.values()[-5:] == list(range(5))


async def test_a_server_restart_is_survived(nats_server: NatsServer, pull_factory) -> None:
    if nats_server is None:
        pytest.skip("needs a server this test can restart")
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        await _setup(client)
        consumer, sink = await pull_factory(client)
        async with _acking(consumer, sink):
            await _publish(client, 100)
            await _until(lambda: len(sink.msgs) >= 100, 10, "first 100")
            await asyncio.sleep(0.2)  # acks reach the server
            # When the server restarts (file store kept), our requests are gone with the old connection
            nats_server.stop()
            nats_server.start()
            await _until(lambda: client.is_connected, 10, "reconnected")
            await _publish(client, 100, start=100, attempts=10)
            # Then the consumer asks again by itself and the next 100 arrive
            await _until(lambda: len(set(sink.values())) >= 200, 15, "200 delivered")
        assert set(sink.values()) == set(range(200))
    finally:
        await client.close()


async def test_stop_is_fast_and_loses_nothing_the_server_sent(nc: Client, pull_factory) -> None:
    # Given a backlog, flowing through a consumer that acks everything it is handed
    await _setup(nc)
    await _publish(nc, 3000)
    consumer, sink = await pull_factory(max_in_flight=512, batch=128)
    flowing = sink.reached[500] = asyncio.Event()
    async with _acking(consumer, sink):
        # (an event, not a poll: within one 20 ms poll a fast consumer can take the whole backlog)
        await asyncio.wait_for(flowing.wait(), 10)
        # When it stops mid-stream
        t0 = time.monotonic()
        await consumer.stop()
        took = time.monotonic() - t0
        await asyncio.sleep(0.1)
    handed = len(sink.msgs)
    # Then it stopped quickly, nothing arrives any more, and every message the server sent was handed on
    # (so acked here): none is left waiting for the ack wait
    assert took < 1.0
    await asyncio.sleep(0.3)
    assert len(sink.msgs) == handed < 3000
    # (the server applies acks asynchronously: poll briefly, far below the 30 s ack wait)
    deadline = time.monotonic() + 2
    while (
        info := await nc.jetstream().consumer_info(STREAM, CONSUMER)
    ).num_ack_pending and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert info.num_ack_pending == 0 and info.ack_floor.stream_seq == handed
    assert info.num_waiting == 0


async def test_plain_callback_path_when_nats_py_internals_are_missing(
    nc: Client, pull_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client whose internals are not the expected ones: routed through callbacks, acked one by one
    monkeypatch.setattr(router, "supported", lambda _: False)
    monkeypatch.setattr(writer, "can_write_raw", lambda _: False)
    await _setup(nc)
    await _publish(nc, 300)
    consumer, sink = await pull_factory()
    await _take_all(consumer, sink, 300, 10)
    assert sink.values() == list(range(300))
    info = await nc.jetstream().consumer_info(STREAM, CONSUMER)
    assert info.ack_floor.stream_seq == 300 and info.num_ack_pending == 0


# ---- pinned pulls (priority group with pinned_client) -------------------------------------------

PIN_TTL_S = 1.0


@pytest.fixture
async def other(nats_url: str) -> AsyncIterator[Client]:
    """A second client on the test's server (a second worker's connection)."""
    async with connected(nats_url) as client:
        yield client


async def _setup_pinned(nc: Client) -> None:
    await nc.jetstream().add_stream(StreamConfig(name=STREAM, subjects=["pt.>"], storage=StorageType.FILE))
    consumer = jsadmin.PinnedConsumer(CONSUMER, "pt.>", group="ml", pin_ttl_s=PIN_TTL_S, ack_wait_s=30)
    await jsadmin.ensure_pinned_consumer(nc, STREAM, consumer)


class PinLog:
    """Records pin events, and what had been handed on when each new pin was announced."""

    def __init__(self, sink: Sink, *, reset_to: int | None = None) -> None:
        self.sink = sink
        self.reset_to = reset_to
        self.pinned: list[tuple[str, int]] = []
        self.lost = 0

    async def on_pinned(self, consumer: PullConsumer, pin: str) -> bool:
        self.pinned.append((pin, len(self.sink.msgs)))
        if self.reset_to is None:
            return False
        await jsadmin.reset(consumer.nc, STREAM, CONSUMER, self.reset_to)
        return True

    def on_pin_lost(self, consumer: PullConsumer) -> None:
        self.lost += 1


async def _pinned(pull_factory, nc: Client, **kwargs: Any) -> tuple[PullConsumer, Sink, PinLog]:
    reset_to = kwargs.pop("reset_to", None)
    holder: list[PinLog] = []

    async def on_pinned(consumer: PullConsumer, pin: str) -> bool:
        return await holder[0].on_pinned(consumer, pin)

    consumer, sink = await pull_factory(
        nc,
        group="ml",
        pin_ttl_s=PIN_TTL_S,
        on_pinned=on_pinned,
        on_pin_lost=lambda c: holder[0].on_pin_lost(c),
        **kwargs,
    )
    holder.append(PinLog(sink, reset_to=reset_to))
    return consumer, sink, holder[0]


async def test_one_pinned_client_takes_everything_and_keeps_the_pin_while_it_processes(
    nc: Client, other: Client, pull_factory
) -> None:
    # Given a consumer with a pinned priority group (TTL 1 s) and two clients pulling on it
    await _setup_pinned(nc)
    a, sink_a, pins_a = await _pinned(pull_factory, nc)
    b, sink_b, pins_b = await _pinned(pull_factory, other)
    await _publish(nc, 40)
    # When the first message goes to one of them: that client is announced pinned before it sees any message
    await _until(lambda: len(sink_a.msgs) + len(sink_b.msgs) >= 40, 5, "40 delivered")
    (winner, sink, pins), (loser, lost_sink, _) = sorted(
        [(a, sink_a, pins_a), (b, sink_b, pins_b)], key=lambda t: -len(t[1].msgs)
    )
    assert [n for _, n in pins.pinned] == [0] and winner.pin_id == pins.pinned[0][0]
    assert lost_sink.msgs == [] and loser.pin_id is None
    assert sink.values() == list(range(40))
    # And while it holds everything unsettled for 3 TTLs (the in-flight bound reached), requests with its
    # pin id keep the pin: nothing goes to the other client, no 423
    await _publish(nc, 100, start=40)
    await asyncio.sleep(3 * PIN_TTL_S)
    assert lost_sink.msgs == [] and winner.statuses.get(423, 0) == 0 and pins.lost == 0
    assert len(sink.msgs) >= 64
    info = await jsadmin.consumer_info(nc, STREAM, CONSUMER)
    assert jsadmin.pinned_client_id(info, "ml") == winner.pin_id


async def test_a_stopped_owner_loses_the_pin_after_the_ttl_and_an_unpinned_one_is_told(
    nc: Client, other: Client, pull_factory
) -> None:
    await _setup_pinned(nc)
    a, sink_a, pins_a = await _pinned(pull_factory, nc)
    await _publish(nc, 5)
    await _until(lambda: len(sink_a.msgs) == 5, 5, "a pinned")
    await a.settle(sink_a.msgs)
    b, sink_b, pins_b = await _pinned(pull_factory, other)
    # When the owner stops pulling, the standby is pinned about one TTL later (not before)
    t0 = time.monotonic()
    await a.stop()
    await _publish(nc, 5, start=5)
    await _until(lambda: len(sink_b.msgs) == 5, 5 * PIN_TTL_S, "b pinned")
    assert time.monotonic() - t0 >= 0.8 * PIN_TTL_S
    assert sink_b.values() == list(range(5, 10)) and b.pin_id not in (None, a.pin_id)
    await b.settle(sink_b.msgs)
    # When an admin UNPINs it, its requests are refused (423) once there is something to deliver: it
    # forgets the pin and stops pulling
    await jsadmin.unpin(nc, STREAM, CONSUMER, "ml")
    await _publish(nc, 3, start=10)
    await _until(lambda: pins_b.lost == 1, 3, "423 seen")
    assert b.pin_id is None and not b.pulling and len(sink_b.msgs) == 5
    # And once told to re-acquire, it is pinned again (a new id) and delivery goes on
    b.reacquire()
    await _until(lambda: len(sink_b.msgs) == 8, 5, "re-pinned")
    assert len(pins_b.pinned) == 2 and pins_b.pinned[1][0] != pins_b.pinned[0][0]


async def test_a_takeover_that_resets_the_consumer_replays_in_order_from_a_fresh_inbox(
    nc: Client, nats_url: str, pull_factory
) -> None:
    # Given a first client that took 1..20 of 30 and died without acking (its pin runs out)
    await _setup_pinned(nc)
    await _publish(nc, 30)
    first = await nats.connect(nats_url)
    dead, sink_dead, _ = await _pinned(pull_factory, first, max_in_flight=20, batch=10)
    await _until(lambda: len(sink_dead.msgs) == 20, 5, "first took messages")
    await first.close()
    # When a new client is pinned and its takeover resets the consumer to stream sequence 11
    b, sink_b, pins_b = await _pinned(pull_factory, nc, reset_to=11)
    async with _acking(b, sink_b):
        await _until(lambda: len(sink_b.msgs) >= 20, 5 * PIN_TTL_S, "replayed")
        await asyncio.sleep(0.2)
    # Then it sees 11..30 exactly once, in order: what arrived before the reset was dropped, not handed on
    assert [m.seq for m in sink_b.msgs] == list(range(11, 31))
    assert [n for _, n in pins_b.pinned] == [0]
    assert b.unsettled == 0

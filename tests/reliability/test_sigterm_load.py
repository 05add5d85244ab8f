"""SIGTERM while snapshots keep arriving: a bounded drain and exit 0, nothing received is lost; a second
SIGTERM during a long drain exits at once.

``tests/worker/test_sigterm.py`` covers a burst followed by SIGTERM in core mode; here the load goes on
through the signal, jetstream mode hands what the stopped worker did not finish to the next one, and the
second signal is measured.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import RawPublisher, client
from tests.support.lifecycle import until
from tests.support.messages import Sink, snapshot
from tests.support.processes import SpawnWorker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

DRAIN_S = 5.0
EXIT_MARGIN_S = 3.0
SYMBOLS = 8


async def _steady_load(nc: Client, first: int, stop: asyncio.Event, rate_per_s: int = 10_000) -> int:
    """Publish ids from ``first`` at about ``rate_per_s`` (below capacity) until ``stop``; the next id."""
    i = first
    chunk = rate_per_s // 100
    while not stop.is_set():
        for _ in range(chunk):
            await nc.publish(subjects.snapshot_for(f"L{i % SYMBOLS}"), snapshot(i, f"L{i % SYMBOLS}"))
            i += 1
        await asyncio.sleep(0.01)
    await nc.flush()
    return i


async def test_core_sigterm_under_load_exits_zero_and_publishes_all_it_received(
    server: NatsServer, spawn_worker: SpawnWorker
) -> None:
    worker = await spawn_worker(server.url, drain_timeout_s=DRAIN_S).ready()
    async with client(server.url) as nc:
        preds = await Sink.on(nc, subjects.PREDICTION)
        stop = asyncio.Event()
        load = asyncio.create_task(_steady_load(nc, 0, stop))
        try:
            # When SIGTERM arrives while snapshots keep coming
            await until(lambda: len(preds.msgs) >= 5000, 20, "5000 predicted")
            signalled = time.monotonic()
            worker.send(signal.SIGTERM)
            code = await worker.wait(DRAIN_S + EXIT_MARGIN_S)
            exit_s = time.monotonic() - signalled
        finally:
            stop.set()
            published = await load
        await asyncio.sleep(0.3)  # the last predictions, flushed before exit, reach the sink

    # Then it exits 0 in time, having published everything it received: the server delivers in order and
    # stops at the unsubscribe, so what reached the worker is a prefix of the input, and all of it is here
    stopped = worker.stopped()
    print(f"\nRESULT sigterm core: exit={code} in {exit_s:.2f}s published={published} stopped={stopped}")
    assert code == 0
    assert stopped is not None
    out, dead, abandoned = stopped
    assert abandoned == 0 and dead == 0
    ids = preds.ids()
    assert len(ids) == out
    assert set(ids) == set(range(out)), "a gap: something the worker received was not published"
    assert out < published  # the signal came during the load


async def test_jetstream_sigterm_under_load_hands_the_rest_to_the_next_worker(
    server: NatsServer, spawn_worker: SpawnWorker
) -> None:
    settings = {"mode": "jetstream", "ack_wait_s": 2, "batch_max": 64, "drain_timeout_s": 2}
    first = await spawn_worker(server.url, **settings).ready()
    n = 6000
    async with client(server.url) as nc:
        js = nc.jetstream()
        preds, dlq = await Sink.on(nc, subjects.PREDICTION), await Sink.on(nc, subjects.DLQ)
        # When SIGTERM reaches the worker while it consumes a backlog that is still being published
        for start in range(0, n, 200):
            acks = [
                await js.publish_async(subjects.snapshot_for(f"J{i % SYMBOLS}"), snapshot(i, f"J{i % SYMBOLS}"))
                for i in range(start, start + 200)
            ]
            await asyncio.gather(*acks)
            if start == n // 2:
                first.send(signal.SIGTERM)
                signalled = time.monotonic()
        code: int | None = await first.wait(2 + EXIT_MARGIN_S)
        exit_s = time.monotonic() - signalled
        before_next = len(set(preds.ids()))
        # Then a worker started afterwards takes over, and nothing is lost
        await spawn_worker(server.url, **settings).ready()
        everything = set(range(n))
        await until(lambda: set(preds.ids()) | set(dlq.reasons()) >= everything, 30, "every input accounted for")
        ids = preds.ids()
        print(
            f"\nRESULT sigterm jetstream: exit={code} after {exit_s:.2f}s stopped={first.stopped()} "
            f"predicted_by_first={before_next} by_both={len(set(ids))} duplicates={len(ids) - len(set(ids))} "
            f"dead_letters={len(dlq.msgs)}"
        )
    assert "SIGTERM: stopping intake and draining" in first.log()
    assert code == 0
    assert 0 < before_next < n  # the first stopped mid-stream; the second had work left
    assert set(dlq.reasons().values()) <= {"out_of_order"}


async def test_idle_jetstream_worker_exits_within_the_drain_bound_on_sigterm(
    server: NatsServer, spawn_worker: SpawnWorker
) -> None:
    # Given a jetstream worker that has been waiting for messages for two seconds (a few fetch cycles)
    worker = await spawn_worker(server.url, mode="jetstream", drain_timeout_s=1).ready()
    await asyncio.sleep(2)
    # When it gets SIGTERM, then it exits 0 within the drain bound
    worker.send(signal.SIGTERM)
    assert await worker.wait(1 + EXIT_MARGIN_S) == 0


async def test_second_sigterm_during_a_long_drain_exits_at_once(server: NatsServer, spawn_worker: SpawnWorker) -> None:
    # Small batches make the drain take seconds (at full speed the worker drained over half of it in 0.5 s)
    worker = await spawn_worker(server.url, drain_timeout_s=30, batch_max=16).ready()
    n = 200_000
    async with client(server.url) as nc, RawPublisher.connect(server.url) as pub:
        preds = await Sink.on(nc, subjects.PREDICTION)
        # Given a backlog that takes seconds to drain (buffered by the server and the worker's client)
        block = RawPublisher.block(
            [(subjects.snapshot_for(f"D{i % SYMBOLS}"), snapshot(i, f"D{i % SYMBOLS}")) for i in range(n)]
        )
        await pub.send(block)
        # When SIGTERM starts the drain, and a second one follows while it is still going
        worker.send(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert worker.proc is not None and worker.proc.poll() is None and worker.stopped() is None
        second = time.monotonic()
        worker.send(signal.SIGTERM)
        code = await worker.wait(5)
        exit_s = time.monotonic() - second
        await asyncio.sleep(0.2)
        done = len(preds.msgs)
    print(f"\nRESULT second sigterm: exit={code} {exit_s * 1000:.0f}ms after the second signal, {done} of {n} drained")
    # Then it leaves at once, without finishing the drain, with a non-zero code
    assert code == 1
    assert exit_s < 1.0  # measured 0.1-0.25 s; the whole drain would take seconds
    assert "second SIGTERM: exiting at once" in worker.log()
    assert worker.stopped() is None and done < n // 2

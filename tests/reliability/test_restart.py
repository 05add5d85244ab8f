"""NATS server restart under load, jetstream mode: the worker recovers on its own and nothing is lost.

The server stops (SIGTERM) while snapshots are being published and consumed, and starts again on the same
port with the same JetStream store. The publisher retries until acknowledged with ``Nats-Msg-Id``, so the
input stream holds each snapshot once. Output is read from a core subscription and from streams of the
same server (a core subscription misses what is published while the test itself reconnects); the
predictions stream deduplicates on ``Nats-Msg-Id``. Core mode's restart is in ``tests/worker/test_reconnect.py``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

import pytest

from spark_ml.core import subjects
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import client
from tests.support.jetstream import (
    INTAKES,
    PREDICTIONS,
    add_file_stream,
    intake_state,
    publish_until_acked,
    read_predictions,
    read_stream,
)
from tests.support.lifecycle import until
from tests.support.messages import Sink, snapshot, ts_of
from tests.support.processes import SpawnWorker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

N = 3000
SYMBOLS = 8
DEAD = "DEAD_LETTERS"


@dataclass
class Outcome:
    inputs_stored: int
    stored: collections.Counter[int]
    """Predictions in the predictions stream, by input id."""
    seen: set[int]
    """Input ids of predictions the test's core subscription received."""
    dead: dict[int, str]
    """Dead letters (stream and core subscription): input id -> reason."""
    reconnects: float
    alive: bool


async def _restart_under_load(server: NatsServer, spawn_worker: SpawnWorker, restarts: int, solo: bool) -> Outcome:
    async with client(server.url) as nc:
        js = nc.jetstream()
        # Given streams keeping the output, and a jetstream worker
        for name, subject in ((PREDICTIONS, subjects.PREDICTION), (DEAD, subjects.DLQ)):
            await add_file_stream(js, name, subject, duplicate_window=120.0)
        raw, raw_dead = await Sink.on(nc, subjects.PREDICTION), await Sink.on(nc, subjects.DLQ)
        worker = await spawn_worker(server.url, mode="jetstream", ack_wait_s=2, batch_max=64, solo=solo).ready()

        # When snapshots are published (each until acknowledged) and the server restarts under that load
        published = 0

        async def publish() -> None:
            nonlocal published
            deadline = time.monotonic() + 40
            for i in range(N):
                symbol = f"R{i % SYMBOLS}"
                await publish_until_acked(js, subjects.snapshot_for(symbol), snapshot(i, symbol), f"in-{i}", deadline)
                published += 1

        publisher = asyncio.create_task(publish())
        try:
            for k in range(1, restarts + 1):
                point = N * k // (restarts + 1)
                await until(lambda: published >= point, 30, f"restart {k} point")  # noqa: B023 awaited at once
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(0.3)
                await asyncio.to_thread(server.start)
            await asyncio.wait_for(publisher, 45)
        finally:
            publisher.cancel()

        # Then the worker catches up by itself: its consumers settle with everything acknowledged
        async def settled() -> bool:
            try:
                return (await intake_state(js)).settled
            except Exception:
                return False  # JetStream may still be recovering its store

        deadline = time.monotonic() + 30
        while not await settled():
            assert time.monotonic() < deadline, f"consumer did not settle:\n{worker.log()[-2000:]}"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)  # the last predictions reach the core subscription

        dead = raw_dead.reasons()
        for data, headers in await read_stream(js, DEAD, subjects.DLQ):
            dead[ts_of(data)] = (headers or {}).get(subjects.H_ERROR, "?")
        outcome = Outcome(
            inputs_stored=(await js.stream_info(subjects.JS_STREAM)).state.messages,
            stored=collections.Counter(ts_of(d) for d, _ in await read_predictions(js)),
            seen=set(raw.ids()),
            dead=dead,
            reconnects=(await worker.scrape()).total("ml_nats_reconnects_total"),
            alive=worker.proc is not None and worker.proc.poll() is None,
        )
    lost = set(range(N)) - set(outcome.stored) - set(outcome.dead)
    print(
        f"\nRESULT restart x{restarts}: in_stream={len(outcome.stored)} seen_on_core={len(outcome.seen)} "
        f"dead_letters={len(outcome.dead)} acked_but_not_in_stream={len(lost)} reconnects={outcome.reconnects:.0f}"
    )
    return outcome


@INTAKES
async def test_jetstream_worker_recovers_from_nats_restart_and_loses_nothing(
    server: NatsServer, spawn_worker: SpawnWorker, solo: bool
) -> None:
    out = await _restart_under_load(server, spawn_worker, restarts=2, solo=solo)
    # every input stored once, and each one predicted (in the stream or on the subject) or dead-lettered
    # as out_of_order: redelivered after newer snapshots of its symbol, because its ack died with the server
    # (solo; partitioned: the server forgot the pins, every unit is taken over again from its checkpoint and
    # replayed in order, so nothing is refused)
    assert out.inputs_stored == N
    accounted = set(out.stored) | out.seen | set(out.dead)
    assert accounted == set(range(N)), sorted(set(range(N)) - accounted)[:20]
    assert set(out.dead.values()) <= ({"out_of_order"} if solo else set()), out.dead
    assert max(out.stored.values()) == 1  # redelivered outputs deduplicated by Nats-Msg-Id
    assert out.reconnects >= 1 and out.alive

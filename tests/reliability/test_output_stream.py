"""At-least-once into a predictions stream: an input whose prediction the stream did not store must not be acked.

A stream that refuses writes (full with ``discard: new`` here; a server stopping, a stream without a
leader during an election, an exhausted quota in production) must not leave acknowledged inputs whose
prediction exists nowhere durable. The worker finds the stream over ``ml.prediction`` at start, publishes
predictions through JetStream, acks an input only after its prediction's PubAck, and naks it with a
delay otherwise, so a refused input is retried until ``max_deliver`` and then dead-lettered.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js.api import DiscardPolicy

from spark_ml.core import subjects
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import client
from tests.support.jetstream import INTAKES, add_predictions_stream, intake_state, read_predictions
from tests.support.messages import Sink, snapshot, ts_of
from tests.support.processes import SpawnWorker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

N = 200
ROOM = 100


@INTAKES
async def test_input_is_not_acked_when_the_predictions_stream_refuses_its_prediction(
    server: NatsServer, spawn_worker: SpawnWorker, solo: bool
) -> None:
    async with client(server.url) as nc:
        js = nc.jetstream()
        # Given a predictions stream with room for half of the predictions, refusing the rest
        await add_predictions_stream(js, max_msgs=ROOM, discard=DiscardPolicy.NEW)
        dlq = await Sink.on(nc, subjects.DLQ)
        worker = spawn_worker(server.url, mode="jetstream", ack_wait_s=1, max_deliver=2, js_backoff_s="0.5", solo=solo)
        await worker.ready()
        # When N snapshots are consumed
        for i in range(N):
            await js.publish(subjects.snapshot_for(f"O{i}"), snapshot(i, f"O{i}"))
        # Then (at-least-once) each input is either stored as a prediction, or still being retried and in
        # the end dead-lettered; never acknowledged with its prediction stored nowhere
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if (await intake_state(js)).settled:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stored = {ts_of(d) for d, _ in await read_predictions(js)}
        reasons = dlq.reasons()
        dead = set(reasons)
        lost = set(range(N)) - stored - dead
        print(f"\nRESULT output-stream: stored={len(stored)} dead_letters={len(dead)} acked_and_lost={len(lost)}")
        assert not lost, f"{len(lost)} inputs acknowledged with no stored prediction and no dead letter"
        # And exactly: the stream's room is filled, each refused input ran out of deliveries and was
        # dead-lettered, and no input whose prediction was stored was retried into a dead letter
        assert len(stored) == ROOM and not stored & dead
        assert set(reasons.values()) == {"max_deliver"}

"""A jetstream worker frozen (SIGSTOP) past the ack wait and resumed, while a second one runs.

Solo workers (one shared durable): the server redelivers what the frozen worker held to the other one; when the
frozen one resumes it still publishes its copies. Raw ``ml.prediction`` may therefore carry a prediction twice
(at-least-once), but a predictions stream deduplicating on the ``Nats-Msg-Id`` the worker sets holds each input
exactly once.

Partitioned workers: the frozen worker's pins lapse (pin TTL) and its member key expires (member TTL); the other
one takes its units over from their checkpoints and replays what came after them, so raw ``ml.prediction``
carries again what the frozen one had published since its last checkpoint (same ``Nats-Msg-Id``, same
features). When the frozen one resumes, it fences itself: its pull loop finds itself late by more than the
pin's TTL, so it holds back (neither publishes nor acks) what it held, forgets those units' states, and only
works on what a new pin gives it. The predictions stream holds each input exactly once either way.
"""

from __future__ import annotations

import asyncio
import collections
import signal

import pytest

from spark_ml.core import subjects
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import client
from tests.support.jetstream import INTAKES, add_predictions_stream, intake_state, read_predictions
from tests.support.lifecycle import until
from tests.support.messages import Sink, snapshot, ts_of
from tests.support.processes import SpawnWorker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

N = 3000
ACK_WAIT_S = 1.0
PARTITIONED_UNITS = 17
"""The default 16 partitions and the forwarder."""


@INTAKES
async def test_paused_worker_resumed_past_ack_wait_doubles_no_output(
    server: NatsServer, spawn_worker: SpawnWorker, solo: bool
) -> None:
    async with client(server.url) as nc:
        js = nc.jetstream()
        # Given a predictions stream that deduplicates on Nats-Msg-Id, and two jetstream workers
        await add_predictions_stream(js, duplicate_window=120.0)
        raw, dlq = await Sink.on(nc, subjects.PREDICTION), await Sink.on(nc, subjects.DLQ)
        settings = {"mode": "jetstream", "ack_wait_s": ACK_WAIT_S, "batch_max": 32, "solo": solo}
        frozen = await spawn_worker(server.url, **settings).ready()  # the first one creates stream and consumer
        other = await spawn_worker(server.url, **settings).ready()

        # When inputs flow (one symbol each, so a redelivered input is predicted again, never refused as
        # out of order) and one worker is frozen past the ack wait, then resumed
        published = 0

        async def publish() -> None:
            # Acknowledged publishes in windows of 100, fast enough that both workers hold full fetches.
            nonlocal published
            for start in range(0, N, 100):
                acks = [
                    await js.publish_async(subjects.snapshot_for(f"U{i}"), snapshot(i, f"U{i}"))
                    for i in range(start, min(start + 100, N))
                ]
                await asyncio.gather(*acks)
                published += len(acks)

        publisher = asyncio.create_task(publish())
        try:
            await until(lambda: published >= N // 4, 20, "a quarter published")
            lost_before = frozen.log().count("pin lost")
            frozen.send(signal.SIGSTOP)
            redelivered = 0

            async def redeliveries() -> int:
                if not solo:  # the other worker owns every unit: it took the frozen one's over, whose copies are stale
                    return int((await other.scrape()).total("ml_partitions_owned") >= PARTITIONED_UNITS)
                # Deliveries counted by the consumer beyond the stream's sequence (the consumer sees every
                # message from the first): redeliveries so far. num_redelivered only counts un-acked ones.
                info = await js.consumer_info(subjects.JS_STREAM, subjects.JS_CONSUMER)
                return int(info.delivered.consumer_seq or 0) - int(info.delivered.stream_seq or 0)

            deadline = asyncio.get_running_loop().time() + 15
            while (redelivered := await redeliveries()) == 0:
                assert asyncio.get_running_loop().time() < deadline, "nothing the frozen worker held was redelivered"
                await asyncio.sleep(0.1)
            await asyncio.sleep(ACK_WAIT_S)  # stay frozen a while longer: its copies are now stale
            frozen.send(signal.SIGCONT)
            await asyncio.wait_for(publisher, 30)
        finally:
            frozen.send(signal.SIGCONT)
            publisher.cancel()

        # Then the consumers settle with everything acknowledged
        async def settled() -> bool:
            return (await intake_state(js)).settled

        deadline = asyncio.get_running_loop().time() + 20
        while not await settled():
            assert asyncio.get_running_loop().time() < deadline, "consumer did not settle"
            await asyncio.sleep(0.1)
        await until(lambda: len(set(raw.ids())) >= N, 10, "every input on raw ml.prediction")
        await asyncio.sleep(0.3)  # late duplicates from the resumed worker, if any, land now

        # And the predictions stream holds every input exactly once, though raw output had duplicates
        stored = collections.Counter(ts_of(data) for data, _ in await read_predictions(js))
        raw_counts = collections.Counter(raw.ids())
        duplicates = sum(raw_counts.values()) - len(raw_counts)
        redelivered = await redeliveries()
        print(f"\nRESULT pause: redelivered={redelivered} raw={sum(raw_counts.values())} raw_duplicates={duplicates}")
        assert set(stored) == set(range(N))
        assert max(stored.values()) == 1, {ts: c for ts, c in stored.items() if c > 1}
        assert dlq.msgs == []
        assert set(raw_counts) == set(range(N))
        if solo:
            assert duplicates > 0, "the resumed worker published none of its stale copies: nothing was deduplicated"
        else:  # the resumed worker learnt that it lost its pins (its own clock, or a 423) and fenced itself
            assert frozen.log().count("pin lost") > lost_before, frozen.log()[-3000:]

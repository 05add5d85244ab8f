"""A worker survives a NATS server restart: it reconnects by itself, resubscribes and predicts again."""

from __future__ import annotations

import asyncio

import msgpack
import nats

from spark_ml.core import subjects
from spark_ml.worker.natsserver import NatsServer
from tests.support.messages import Collector


async def test_worker_resumes_after_nats_restart(worker_factory, nats_server: NatsServer | None) -> None:
    if nats_server is None:
        import pytest

        pytest.skip("needs the fixture's own nats-server to restart it")
    app = await worker_factory()
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        preds = Collector()
        await nc.subscribe(subjects.PREDICTION, cb=preds.cb)
        await nc.publish(subjects.snapshot_for("R"), msgpack.packb({"ts": 1, "mid": 1.0}))
        await preds.wait(1)
        # When the server restarts on the same port
        nats_server.stop()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(nats_server.start)
        # Then the worker reconnects on its own, counts it, and predicts what is published afterwards
        deadline = asyncio.get_running_loop().time() + 20
        ts = 2
        while len(preds.msgs) < 2:
            assert asyncio.get_running_loop().time() < deadline, "no prediction after the restart"
            if nc.is_connected:
                await nc.publish(subjects.snapshot_for("R"), msgpack.packb({"ts": ts, "mid": 1.0}))
                ts += 1
            await asyncio.sleep(0.2)
        assert app.metrics.nats_reconnects._value.get() >= 1
        assert app.ready()
    finally:
        await nc.close()

"""A real `spark-ml worker` process drains on SIGTERM: stop intake, finish in-flight work, flush, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import msgpack
from nats.aio.client import Client

from spark_ml.core import subjects
from tests.support.messages import Collector


async def _wait_ready(nc: Client, preds: Collector, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not preds.msgs:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("worker did not answer a probe")
        await nc.publish(subjects.snapshot_for("PROBE"), msgpack.packb({"ts": 0, "mid": 1.0}))
        await asyncio.sleep(0.1)


async def test_sigterm_drains_and_exits_zero(nc: Client, nats_url: str, tmp_path) -> None:
    env = {
        **os.environ,
        "SPARK_ML_NATS_URL": nats_url,
        "SPARK_ML_METRICS_PORT": "0",
        "SPARK_ML_REGISTRY": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from spark_ml.worker.cli import main; raise SystemExit(main())",
        "worker",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        probe = Collector()
        await nc.subscribe(subjects.PREDICTION, cb=probe.cb)
        await _wait_ready(nc, probe)
        preds = Collector()
        await nc.subscribe(subjects.PREDICTION, cb=preds.cb)
        # When a burst is published and SIGTERM follows right behind it
        n = 5000
        for i in range(n):
            await nc.publish(subjects.snapshot_for(f"S{i % 8}"), msgpack.packb({"ts": i, "mid": 100.0 + i % 3}))
        await nc.flush()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        await nc.flush()
        await asyncio.sleep(0.2)
        # Then it exits 0 and every snapshot that reached it was predicted before it left
        assert code == 0
        got = [b for b in (msgpack.unpackb(m.data) for m in preds.msgs) if b["symbol"] != "PROBE"]
        assert len(got) == n
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert "worker stopped: published=" in err and "abandoned=0" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

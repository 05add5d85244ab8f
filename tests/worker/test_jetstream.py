"""JetStream mode: a durable pull consumer shared by workers; ack after publish; poison dead-lettered and terminated."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import msgpack
from nats.aio.client import Client

from core import subjects

from .conftest import Collector


async def _consumer_settled(nc: Client, expect_acked: int, timeout: float = 10.0) -> None:
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        info = await js.consumer_info(subjects.JS_STREAM, subjects.JS_CONSUMER)
        if info.ack_floor.stream_seq >= expect_acked and info.num_ack_pending == 0 and info.num_pending == 0:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"consumer not settled: {info}")
        await asyncio.sleep(0.05)


async def test_stream_and_consumer_are_created_and_everything_is_acked(nc: Client, worker_factory, collect) -> None:
    # Given a jetstream-mode worker
    await worker_factory(mode="jetstream")
    preds = await collect(subjects.PREDICTION)
    # When snapshots are published on both subject forms
    for i in range(200):
        subject = subjects.snapshot_for("JS") if i % 2 else subjects.SNAPSHOT
        await nc.jetstream().publish(subject, msgpack.packb({"ts": i, "mid": 10.0 + i % 5, "symbol": "JS"}))
    # Then every one is predicted, in order, and acknowledged
    await preds.wait(200)
    assert [b["ts"] for b in preds.bodies()] == list(range(200))
    await _consumer_settled(nc, 200)
    # And each prediction carries Nats-Msg-Id derived from its input's stream sequence
    assert all(m.headers and m.headers["Nats-Msg-Id"].startswith(f"{subjects.JS_STREAM}-") for m in preds.msgs)
    assert len({m.headers["Nats-Msg-Id"] for m in preds.msgs if m.headers}) == 200


async def test_poison_message_is_dead_lettered_with_sequence_and_terminated(
    nc: Client, worker_factory, collect
) -> None:
    await worker_factory(mode="jetstream", ack_wait_s=1.0)
    preds = await collect(subjects.PREDICTION)
    dlq = await collect(subjects.DLQ)
    js = nc.jetstream()
    await js.publish(subjects.SNAPSHOT, msgpack.packb({"ts": 1, "mid": 1.0, "symbol": "P"}))
    ack = await js.publish(subjects.SNAPSHOT, b"\xc1 poison")
    await js.publish(subjects.SNAPSHOT, msgpack.packb({"ts": 2, "mid": 1.0, "symbol": "P"}))
    await preds.wait(2)
    dead = await dlq.wait(1)
    assert dead[0].data == b"\xc1 poison"
    assert dead[0].headers[subjects.H_STREAM_SEQ] == str(ack.seq)
    assert dead[0].headers[subjects.H_ERROR] == "decode"
    await _consumer_settled(nc, 3)
    # Terminated, not redelivered: past the ack wait nothing more arrives
    await asyncio.sleep(1.5)
    assert len(dlq.msgs) == 1 and len(preds.msgs) == 2
    info = await js.consumer_info(subjects.JS_STREAM, subjects.JS_CONSUMER)
    assert info.num_redelivered == 0


def _worker_proc(nats_url: str, tmp_path, name: str) -> list[str]:
    return [sys.executable, "-c", "from worker.cli import main; raise SystemExit(main())", "worker"]


async def test_sigkill_of_one_of_two_workers_loses_nothing(nc: Client, nats_url: str, tmp_path) -> None:
    # Given two jetstream workers sharing the durable consumer, with a short ack wait
    env = {**os.environ, "SPARK_ML_NATS_URL": nats_url, "SPARK_ML_METRICS_PORT": "0", "SPARK_ML_MODE": "jetstream"}
    env.update(SPARK_ML_ACK_WAIT_S="2", SPARK_ML_REGISTRY=str(tmp_path), SPARK_ML_BATCH_MAX="32")
    preds, dlq = Collector(), Collector()
    await nc.subscribe(subjects.PREDICTION, cb=preds.cb)
    await nc.subscribe(subjects.DLQ, cb=dlq.cb)
    procs = []
    try:
        for _ in range(2):
            procs.append(
                await asyncio.create_subprocess_exec(
                    *_worker_proc(nats_url, tmp_path, "w"), env=env, stderr=asyncio.subprocess.DEVNULL
                )
            )
        # wait until both consume: a probe is predicted
        js = nc.jetstream()
        deadline = asyncio.get_running_loop().time() + 20
        while not preds.msgs:
            assert asyncio.get_running_loop().time() < deadline, "workers did not start"
            try:
                await js.publish(subjects.snapshot_for("PROBE"), msgpack.packb({"ts": 0, "mid": 1.0}))
            except Exception:
                await asyncio.sleep(0.2)  # the stream is created by the first worker
            await asyncio.sleep(0.2)
        # When 4000 snapshots flow and one worker is SIGKILLed mid-stream
        n = 4000
        for i in range(n):
            await js.publish(subjects.snapshot_for(f"K{i % 4}"), msgpack.packb({"ts": 1 + i, "mid": 5.0, "seq": i}))
            if i == n // 3:
                procs[0].send_signal(signal.SIGKILL)

        # Then, reconciled, every input is accounted for: predicted at least once by the survivor after
        # redelivery, or dead-lettered as out_of_order (a redelivered snapshot that arrives behind newer
        # ones of its symbol is refused rather than allowed to rewind the indicators).
        def predicted() -> set[int]:
            return {b["ts"] for b in (msgpack.unpackb(m.data) for m in preds.msgs) if b["symbol"] != "PROBE"}

        def dead() -> dict[int, str]:
            return {msgpack.unpackb(m.data)["ts"]: m.headers[subjects.H_ERROR] for m in dlq.msgs if m.headers}

        deadline = asyncio.get_running_loop().time() + 30
        while len(predicted() | set(dead())) < n and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        assert predicted() | set(dead()) == set(range(1, n + 1))
        assert set(dead().values()) <= {"out_of_order"}
        assert len(dead()) < 300  # only what the killed worker held un-acked can be late
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

"""Partitioned JetStream mode on real servers and real `spark-ml worker` processes: 1 vs 3 workers give the same
features per (symbol, ts); a SIGKILLed worker's partitions move and nothing is lost or computed from wrong state;
a joining worker takes its share; snapshots on bare market.snapshot reach their symbol's owner."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from spark_ml.core import subjects
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import connected
from tests.support.messages import decode_any
from tests.support.processes import SpawnWorker, WorkerProcess


def _wired() -> bool:
    """Whether `spark-ml worker` in jetstream mode runs the partitioned intake (make_intake chooses it)."""
    from unittest.mock import MagicMock

    from spark_ml.core.features import FeatureStore
    from spark_ml.worker.intake import make_intake
    from spark_ml.worker.intake.partitioned_js import PartitionedJetStreamIntake
    from spark_ml.worker.settings import Settings

    intake = make_intake(MagicMock(), Settings(mode="jetstream"), MagicMock(), features=FeatureStore())
    return isinstance(intake, PartitionedJetStreamIntake)


pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not _wired(), reason="make_intake does not choose PartitionedJetStreamIntake in jetstream mode"),
]

SYMBOLS = [f"S{i:02d}" for i in range(20)]
PER_SYMBOL = 1000
SETTINGS: dict[str, object] = {
    "mode": "jetstream",
    "partitions": 8,
    "member_ttl_s": 2.0,
    "pin_ttl_s": 1.0,
    "checkpoint_s": 0.2,
    "ack_wait_s": 30.0,
}
Key = tuple[str, int]


def _data(seed: int = 7) -> list[tuple[str, bytes]]:
    """20 symbols x 1000 snapshots, interleaved, each symbol's mid a random walk (features that differ)."""
    rng = random.Random(seed)
    mids = dict.fromkeys(SYMBOLS, 100.0)
    out: list[tuple[str, bytes]] = []
    for i in range(PER_SYMBOL):
        for sym in SYMBOLS:
            mids[sym] = max(1.0, mids[sym] * (1 + rng.gauss(0, 0.01)))
            body = {"ts": 1_700_000_000_000 + i * 1000, "mid": mids[sym], "symbol": sym, "vol1m": rng.uniform(1, 9)}
            out.append((sym, msgpack.packb(body)))
    return out


class Outputs:
    """Predictions (features by (symbol, ts), duplicates kept) and dead letters."""

    def __init__(self) -> None:
        self.features: dict[Key, list[dict[str, float]]] = {}
        self.first_at: dict[Key, float] = {}
        self.dead: list[Msg] = []

    async def on_prediction(self, msg: Msg) -> None:
        body: dict[str, Any] = decode_any(msg.data)
        key = (body["symbol"], body["ts"])
        self.features.setdefault(key, []).append(body["features"])
        self.first_at.setdefault(key, time.monotonic())

    async def on_dead(self, msg: Msg) -> None:
        self.dead.append(msg)

    async def until(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.features) < n:
            assert time.monotonic() < deadline, f"{len(self.features)} of {n} predicted within {timeout}s"
            await asyncio.sleep(0.05)


async def _listen(nc: Client) -> Outputs:
    out = Outputs()
    await nc.subscribe(subjects.PREDICTION, cb=out.on_prediction, pending_msgs_limit=-1, pending_bytes_limit=-1)
    await nc.subscribe(subjects.DLQ, cb=out.on_dead)
    await nc.flush()
    return out


async def _publish(nc: Client, data: list[tuple[str, bytes]], *, bare: bool = False, rate: float = 0.0) -> None:
    """Through JetStream, in order, in PubAck'ed chunks; ``rate`` msgs/s when given."""
    js = nc.jetstream()
    t0 = time.monotonic()
    chunk = 200
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        await asyncio.gather(
            *(js.publish(subjects.SNAPSHOT if bare else subjects.snapshot_for(sym), raw) for sym, raw in part)
        )
        if rate:
            ahead = (start + chunk) / rate - (time.monotonic() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)


async def _run_workers(url: str, spawn_worker: SpawnWorker, n: int, **settings: object) -> list[WorkerProcess]:
    workers = [spawn_worker(url, **{**SETTINGS, **settings}) for _ in range(n)]
    await asyncio.gather(*(w.ready(30) for w in workers))
    return workers


async def _reference(
    tmp_path: Path, spawn_worker: SpawnWorker, data: list[tuple[str, bytes]]
) -> dict[Key, dict[str, float]]:
    """What one uninterrupted jetstream worker publishes for ``data``, on a server of its own."""
    with NatsServer(store_dir=tmp_path / "reference") as ref:
        async with connected(ref.url, allow_reconnect=False) as nc:
            out = await _listen(nc)
            (worker,) = await _run_workers(ref.url, spawn_worker, 1)
            await _publish(nc, data)
            await out.until(len(data), 40)
            worker.kill()
    assert all(len(v) == 1 for v in out.features.values())
    return {k: v[0] for k, v in out.features.items()}


def _assert_same(out: Outputs, reference: dict[Key, dict[str, float]]) -> None:
    assert set(out.features) == set(reference)
    wrong = [k for k, seen in out.features.items() if any(f != reference[k] for f in seen)]
    assert not wrong, f"{len(wrong)} predictions with features other than one worker's, e.g. {wrong[:3]}"
    unordered = [m for m in out.dead if (m.headers or {}).get(subjects.H_ERROR) == "out_of_order"]
    assert not unordered and not out.dead


async def test_three_workers_publish_the_features_of_one(
    server: NatsServer, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    data = _data()
    reference = await _reference(tmp_path, spawn_worker, data)
    # Given three jetstream workers sharing the partitions
    async with connected(server.url, allow_reconnect=False) as nc:
        out = await _listen(nc)
        await _run_workers(server.url, spawn_worker, 3)
        await asyncio.sleep(1.0)  # the three see each other and settle the assignment
        # When the same snapshots are published
        await _publish(nc, data)
        await out.until(len(data), 40)
        await asyncio.sleep(0.5)
    # Then every prediction carries the features one worker computed
    _assert_same(out, reference)
    # And none was made twice: two workers pulling one partition's pinned consumer at once would split its
    # messages (features off) or, after a reset, predict them again
    twice = [k for k, seen in out.features.items() if len(seen) > 1]
    assert not twice, f"{len(twice)} snapshots predicted more than once, e.g. {twice[:3]}"


async def test_sigkill_of_one_of_three_loses_nothing_and_a_fourth_takes_its_share(
    server: NatsServer, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    data = _data(11)
    reference = await _reference(tmp_path, spawn_worker, data)
    async with connected(server.url, allow_reconnect=False) as nc:
        out = await _listen(nc)
        workers = await _run_workers(server.url, spawn_worker, 3)
        await asyncio.sleep(1.0)
        # Given a stream flowing at 2000/s through three workers
        feed = asyncio.create_task(_publish(nc, data, rate=2000))
        await out.until(len(data) // 4, 20)
        # When one is killed mid-stream
        workers[1].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        killed_at = time.monotonic()
        await out.until(len(data) // 2, 20)
        # And a fourth joins later
        (fourth,) = await _run_workers(server.url, spawn_worker, 1)
        await feed
        await out.until(len(data), 40)
        await asyncio.sleep(0.5)
        scrape_log = fourth.log()
    # Then every snapshot was predicted, each time with one uninterrupted worker's features, none dead-lettered
    _assert_same(out, reference)
    # And the killed worker's partitions moved within member TTL + pin TTL + a bit: no symbol waited longer
    gaps = _longest_gap_after(out, killed_at)
    assert gaps < 2.0 + 1.0 + 3.0, f"a symbol went {gaps:.1f}s without a prediction after the kill"
    # And the fourth took units over
    assert "taken over" in scrape_log


def _longest_gap_after(out: Outputs, t0: float) -> float:
    """Per symbol, the longest pause between consecutive first predictions after ``t0`` (by ts order)."""
    worst = 0.0
    for sym in SYMBOLS:
        times = sorted(t for (s, _), t in out.first_at.items() if s == sym and t >= t0)
        worst = max([worst, *(b - a for a, b in zip(times, times[1:], strict=False))])
    return worst


async def test_a_bare_subject_only_stream_reaches_each_symbols_owner(
    server: NatsServer, spawn_worker: SpawnWorker, tmp_path: Path
) -> None:
    data = _data(3)[: 20 * 300]
    reference = await _reference(tmp_path, spawn_worker, data)
    async with connected(server.url, allow_reconnect=False) as nc:
        out = await _listen(nc)
        await _run_workers(server.url, spawn_worker, 3)
        await asyncio.sleep(1.0)
        # When every snapshot is published on bare market.snapshot (the symbol only in the payload)
        await _publish(nc, data, bare=True)
        await out.until(len(data), 40)
        await asyncio.sleep(0.5)
    # Then the forwarder hands them to their partitions, in order: the same features as one worker's
    _assert_same(out, reference)

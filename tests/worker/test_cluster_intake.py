"""The partitioned core intake in-process on a real server: ownership, hand-over with state, the forwarder,
cold marks, and the refusals (no mapping, no JetStream)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.codec import SnapshotParser
from spark_ml.core.errors import ClusterRefused
from spark_ml.core.features import WARMUP, FeatureStore
from spark_ml.core.partition import partition_of, units
from spark_ml.worker.app import WorkerApp
from spark_ml.worker.cluster.leases import unit_lease
from spark_ml.worker.intake import PartitionedCoreIntake
from spark_ml.worker.intake.partitioned_core import H_COLD, mapping_line, probe_mapping
from spark_ml.worker.natsserver import NatsServer
from spark_ml.worker.settings import Settings
from tests.support.connections import connected
from tests.support.lifecycle import until
from tests.support.messages import Collector

P = 16
FAST = {"member_ttl_s": 1.5, "checkpoint_s": 0.2}


def _snap(symbol: str, i: int) -> bytes:
    return msgpack.packb({"ts": 1_000 + i, "mid": 100.0 + (i * 7919 % 13) - 6 + i * 0.01, "symbol": symbol})


def _intake(app: WorkerApp) -> PartitionedCoreIntake:
    assert isinstance(app.intake, PartitionedCoreIntake)
    return app.intake


async def _collect(nc: Client, subject: str) -> Collector:
    c = Collector()
    await nc.subscribe(subject, cb=c.cb)
    await nc.flush()
    await nc.flush()
    return c


async def test_one_worker_owns_every_unit_and_marks_cold_predictions(worker_factory, nc: Client) -> None:
    app = await worker_factory(**FAST)
    intake = _intake(app)
    assert intake.mode == "partitioned" and intake.owned == frozenset(range(units(P)))
    preds = await _collect(nc, subjects.PREDICTION)
    n = WARMUP + 5
    for i in range(n):
        await nc.publish(subjects.snapshot_for("EURUSD"), _snap("EURUSD", i))
    msgs = await preds.wait(n)
    cold = [m.headers.get(H_COLD) if m.headers else None for m in msgs]
    assert cold == ["warmup"] * WARMUP + [None] * 5
    assert [msgpack.unpackb(m.data)["ts"] for m in msgs] == [1_000 + i for i in range(n)]


async def test_bare_snapshots_are_forwarded_to_their_partition(worker_factory, nc: Client) -> None:
    await worker_factory(**FAST)
    preds = await _collect(nc, subjects.PREDICTION)
    dlq = await _collect(nc, subjects.DLQ)
    for i in range(3):
        await nc.publish(subjects.SNAPSHOT, _snap("BTCUSD", i))
    await nc.publish(subjects.SNAPSHOT, b"\xc1 not a snapshot")
    msgs = await preds.wait(3)
    assert [msgpack.unpackb(m.data)["symbol"] for m in msgs] == ["BTCUSD"] * 3
    dead = await dlq.wait(1)
    assert dead[0].data == b"\xc1 not a snapshot" and dead[0].headers
    assert dead[0].headers[subjects.H_SUBJECT] == subjects.SNAPSHOT


async def test_two_workers_share_the_units_and_hand_state_over(worker_factory, nc: Client) -> None:
    a = await worker_factory(**FAST)
    b = await worker_factory(**FAST)
    ia, ib = _intake(a), _intake(b)

    def split() -> bool:
        return ia.owned | ib.owned == frozenset(range(units(P))) and abs(len(ia.owned) - len(ib.owned)) <= 1

    await until(split, 3, "units split evenly")
    assert not ia.owned & ib.owned
    # Warm a symbol on its owner, then stop that owner: the other continues from its handed-over state.
    symbol = next(s for s in ("S1", "S2", "S3", "S4", "S5", "S6") if partition_of(s, P) in ia.owned)
    preds = await _collect(nc, subjects.PREDICTION)
    n = WARMUP + 5
    for i in range(n):
        await nc.publish(subjects.snapshot_for(symbol), _snap(symbol, i))
    await preds.wait(n)
    moved = ia.owned
    await a.stop()
    await until(lambda: ib.owned == frozenset(range(units(P))), 5, "all units on b")
    # at once, from leases a released at its stop, not after they expired (no timing: a loaded machine is slow)
    assert ib.leases is not None
    assert {ib.leases.prior[unit_lease(u)] for u in moved} == {"released"}
    for i in range(n, n + 3):
        await nc.publish(subjects.snapshot_for(symbol), _snap(symbol, i))
    msgs = await preds.wait(n + 3)
    after = msgs[n:]
    assert [(m.headers or {}).get(H_COLD) for m in after] == [None] * 3, "a handed-over state is warm"
    # The state equals that of one uninterrupted worker.
    store, parser = FeatureStore(), SnapshotParser()
    for i in range(n + 3):
        store.update(parser.parse(_snap(symbol, i), subjects.snapshot_for(symbol), None, 0.0))
    assert repr(store.export([symbol])) == repr(ib.features.export([symbol]))


@pytest.fixture
def bare_server(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    """``make(jetstream=True)``: a started server without the partition mapping, stopped after the test."""
    servers: list[NatsServer] = []

    def make(*, jetstream: bool = True) -> NatsServer:
        servers.append(NatsServer(store_dir=tmp_path / f"bare{len(servers)}", jetstream=jetstream).start())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def _settings(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"nats_url": url, "metrics_port": 0, "registry": tmp_path / "registry", **FAST}
    return Settings(**(base | overrides))


async def test_the_probe_sees_the_mapping_and_its_absence(nats_url: str, bare_server) -> None:
    async with connected(nats_url) as nc:
        assert await probe_mapping(nc, P) is None
        assert "other partitions than partition(8,1)" in (await probe_mapping(nc, 8) or "")
    async with connected(bare_server().url) as nc:
        assert "does not map" in (await probe_mapping(nc, P) or "")


async def test_without_the_mapping_one_worker_runs_solo_and_a_second_refuses(bare_server, tmp_path: Path) -> None:
    url = bare_server().url
    first = WorkerApp(_settings(url, tmp_path), handle_signals=False, serve_metrics=False)
    async with first:
        assert _intake(first).mode == "solo"
        second = WorkerApp(_settings(url, tmp_path), handle_signals=False, serve_metrics=False)
        with pytest.raises(ClusterRefused) as refused:
            await second.start()
        assert mapping_line(P) in str(refused.value) and "solo" in str(refused.value)
        async with connected(url) as nc:
            preds = await _collect(nc, subjects.PREDICTION)
            await nc.publish(subjects.snapshot_for("EURUSD"), _snap("EURUSD", 0))
            await nc.publish(subjects.SNAPSHOT, _snap("EURUSD", 1))
            assert len(await preds.wait(2)) == 2


async def test_without_jetstream_only_solo_starts(bare_server, tmp_path: Path) -> None:
    url = bare_server(jetstream=False).url
    app = WorkerApp(_settings(url, tmp_path), handle_signals=False, serve_metrics=False)
    with pytest.raises(ClusterRefused) as refused:
        await app.start()
    assert "JetStream" in str(refused.value) and "SPARK_ML_SOLO" in str(refused.value)
    solo = WorkerApp(_settings(url, tmp_path, solo=True), handle_signals=False, serve_metrics=False)
    async with solo:
        assert _intake(solo).mode == "solo"

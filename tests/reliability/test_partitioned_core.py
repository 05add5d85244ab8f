"""Core mode scaled out: 1 vs 3 ``spark-ml worker`` processes on a server with the partition mapping.

4 symbols x 1500 real EURUSD hourly bars go through one worker, then (on a fresh server) through three.
Every prediction's features must equal the single worker's (same symbol, same ts), and the ``Spark-Ml-Cold``
marks too. "No partition processed by two workers at once" is read from the output: partitioned workers
subscribe without a queue group, so two workers on one partition would both predict each of its snapshots,
and a (symbol, ts) would come out twice. Each worker's final log line says how many it published: all three
took part, and the counts add up to the input.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any

import msgpack
import nats.js.errors

from spark_ml.core import subjects
from spark_ml.core.features import WARMUP
from spark_ml.core.ml.sources import load
from spark_ml.core.partition import assign, partition_of, server_mappings, units
from spark_ml.worker.cluster.leases import LEASES_BUCKET, unit_lease
from spark_ml.worker.intake.partitioned_core import H_COLD
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import client
from tests.support.lifecycle import until
from tests.support.messages import Sink
from tests.support.processes import SpawnWorker, WorkerProcess

_MEMBER = re.compile(r"partitions: member (\S+) owns")
P = 16
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
BARS = 1500
SETTINGS: dict[str, Any] = {"partitions": P, "batch_max": 64, "member_ttl_s": 3, "checkpoint_s": 0.5}


def _inputs() -> list[tuple[str, bytes]]:
    """Per bar, the four symbols' snapshots (each symbol its own copy of the series, scaled apart)."""
    snaps = load("eurusd").snapshots[:BARS]
    out = []
    for snap in snaps:
        for k, symbol in enumerate(SYMBOLS):
            body = {"ts": snap.ts, "mid": snap.mid * (1 + k), "symbol": symbol}
            if snap.vol1m is not None:
                body["vol1m"] = snap.vol1m
            out.append((subjects.snapshot_for(symbol), msgpack.packb(body)))
    return out


async def _holders(url: str) -> dict[int, str | None]:
    async with client(url) as nc:
        kv = await nc.jetstream().key_value(LEASES_BUCKET)
        held: dict[int, str | None] = {}
        for n in range(units(P)):
            try:
                held[n] = ((await kv.get(unit_lease(n))).value or b"").decode() or None
            except nats.js.errors.KeyNotFoundError:
                held[n] = None
        return held


async def _run(url: str, workers: list[WorkerProcess]) -> dict[tuple[str, int], tuple[dict[str, float], str | None]]:
    """Publish every input, collect every prediction: (symbol, ts) -> (features, cold mark)."""
    inputs = _inputs()
    async with client(url) as nc:
        preds = await Sink.on(nc, subjects.PREDICTION)
        for i, (subject, payload) in enumerate(inputs):
            await nc.publish(subject, payload)
            if i % 400 == 399:
                await nc.flush()
                await asyncio.sleep(0.01)  # a steady stream, not one burst
        await nc.flush()
        await until(lambda: len(preds.msgs) >= len(inputs), 60, f"{len(inputs)} predictions")
        await asyncio.sleep(0.5)  # duplicates, if any, would arrive now
    for w in workers:
        w.send(signal.SIGTERM)
    for w in workers:
        assert await w.wait(20) == 0
    out: dict[tuple[str, int], tuple[dict[str, float], str | None]] = {}
    dupes = 0
    for data, headers in preds.msgs:
        body = msgpack.unpackb(data)
        key = (body["symbol"], body["ts"])
        dupes += key in out
        out[key] = (body["features"], (headers or {}).get(H_COLD))
    assert dupes == 0, f"{dupes} snapshots predicted twice: two workers consumed one partition at once"
    assert len(out) == len(inputs)
    return out


async def test_three_partitioned_core_workers_predict_what_one_worker_predicts(
    tmp_path: Path, spawn_worker: SpawnWorker
) -> None:
    assert len({partition_of(s, P) for s in SYMBOLS}) > 1, "the symbols must spread over partitions"
    with NatsServer(store_dir=tmp_path / "one", mappings=server_mappings(P)) as server:
        one = await spawn_worker(server.url, **SETTINGS).ready()
        single = await _run(server.url, [one])

    with NatsServer(store_dir=tmp_path / "three", mappings=server_mappings(P)) as server:
        three = [spawn_worker(server.url, **SETTINGS) for _ in range(3)]
        for w in three:
            await w.ready()
        holders: dict[int, str | None] = {}

        async def balanced() -> bool:
            holders.update(await _holders(server.url))
            members = {h for h in holders.values() if h}
            if len(members) != 3:
                return False
            want = assign(members, units(P))
            return all(holders[n] == m for m, ns in want.items() for n in ns)

        for _ in range(100):
            if await balanced():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"partitions not balanced over 3 workers: {holders}")
        spread = await _run(server.url, three)

    published = [w.stopped() for w in three]
    print(f"\nRESULT partitioned core 1 vs 3: predictions={len(spread)} per worker={published} holders={holders}")
    assert single.keys() == spread.keys()
    differ = [k for k in single if single[k] != spread[k]]
    assert not differ, f"{len(differ)} predictions differ, e.g. {differ[:3]}"
    counts = [p[0] if p else -1 for p in published]
    assert sum(counts) == len(spread)
    # Exactly the workers owning a symbol's partition published, the others nothing.
    owners = {holders[partition_of(s, P)] for s in SYMBOLS}
    members = [m.group(1) if (m := _MEMBER.search(w.log())) else "?" for w in three]
    assert [c > 0 for c in counts] == [m in owners for m in members], (counts, members, owners)
    cold = sum(1 for _, mark in spread.values() if mark)
    assert cold == len(SYMBOLS) * WARMUP, "only each symbol's warm-up is marked cold"

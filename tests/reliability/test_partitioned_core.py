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
import random
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


JOIN_SYMBOLS = [f"J{i:02d}" for i in range(20)]
JOIN_STEPS = 800
JOIN_RATE = 2000.0
"""Snapshots a second: 20 symbols x 800 steps take 8 s, long enough for a fourth worker to start and join."""


def _join_inputs() -> list[tuple[str, bytes]]:
    """20 symbols x 800 steps, interleaved; each symbol's mid a random walk (features that differ)."""
    rng = random.Random(5)
    mids = dict.fromkeys(JOIN_SYMBOLS, 100.0)
    out = []
    for i in range(JOIN_STEPS):
        for sym in JOIN_SYMBOLS:
            mids[sym] = max(1.0, mids[sym] * (1 + rng.gauss(0, 0.01)))
            body = {"ts": 1_700_000_000_000 + i * 1000, "mid": mids[sym], "symbol": sym, "vol1m": rng.uniform(1, 9)}
            out.append((subjects.snapshot_for(sym), msgpack.packb(body)))
    return out


Predictions = dict[tuple[str, int], list[tuple[dict[str, float], str | None]]]


async def _collect(url: str, inputs: list[tuple[str, bytes]], *, during: Any = None) -> Predictions:
    """Publish ``inputs`` at JOIN_RATE and collect until 1.5 s of quiet.

    ``during`` starts once a twentieth is out; the last tenth waits for it, so traffic flows after it too.
    """
    out: Predictions = {}
    async with client(url) as nc:

        async def on_prediction(msg: Any) -> None:
            body = msgpack.unpackb(msg.data)
            out.setdefault((body["symbol"], body["ts"]), []).append((body["features"], (msg.headers or {}).get(H_COLD)))

        await nc.subscribe(subjects.PREDICTION, cb=on_prediction, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await nc.flush()
        started = asyncio.get_running_loop().time()
        side: asyncio.Task[Any] | None = None
        for i, (subject, payload) in enumerate(inputs):
            await nc.publish(subject, payload)
            if i % 100 == 99:
                await nc.flush()
                ahead = (i + 1) / JOIN_RATE - (asyncio.get_running_loop().time() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if during is not None and side is None and i >= len(inputs) // 20:
                side = asyncio.create_task(during())
            if side is not None and i == len(inputs) * 9 // 10:
                await side
                started = asyncio.get_running_loop().time() - (i + 1) / JOIN_RATE
        await nc.flush()
        if side is not None:
            await side
        seen = -1
        while seen != len(out):  # quiet: no new prediction for 1.5 s
            seen = len(out)
            await asyncio.sleep(1.5)
    return out


async def test_a_fourth_core_worker_joining_mid_stream_takes_its_share_from_the_handed_over_state(
    tmp_path: Path, spawn_worker: SpawnWorker
) -> None:
    inputs = _join_inputs()
    settings = {**SETTINGS, "member_ttl_s": 2}
    with NatsServer(store_dir=tmp_path / "one", mappings=server_mappings(P)) as server:
        one = await spawn_worker(server.url, **settings).ready()
        reference = await _collect(server.url, inputs)
        one.kill()
    assert len(reference) == len(inputs) and all(len(v) == 1 for v in reference.values())

    with NatsServer(store_dir=tmp_path / "four", mappings=server_mappings(P)) as server:
        three = [spawn_worker(server.url, **settings) for _ in range(3)]
        await asyncio.gather(*(w.ready() for w in three))
        await _until_balanced(server.url, 3)
        before = await _holders(server.url)
        workers = list(three)

        async def join() -> None:
            workers.append(await spawn_worker(server.url, **settings).ready())
            await _until_balanced(server.url, 4)

        # Given three workers and a steady stream, when a fourth joins mid-stream
        out = await _collect(server.url, inputs, during=join)
        after = await _holders(server.url)
        for w in workers:
            w.send(signal.SIGTERM)
        for w in workers:
            assert await w.wait(20) == 0
    counts = [p[0] if (p := w.stopped()) else -1 for w in workers]
    moved = {n for n in range(units(P)) if before[n] != after[n]}
    # Then the fourth took partitions (some holding our symbols) and published their predictions
    newcomer = set(after.values()) - set(before.values())
    assert len(newcomer) == 1 and moved, (before, after)
    assert counts[3] > 0, counts
    # And no snapshot was predicted twice: never two owners of one partition at once
    twice = [k for k, v in out.items() if len(v) > 1]
    assert not twice, f"{len(twice)} snapshots predicted twice, e.g. {twice[:3]}"
    # And only the moved partitions lost snapshots (at-most-once: those published while neither owner subscribed)
    lost = sorted(set(reference) - set(out))
    assert {partition_of(s, P) for s, _ in lost} <= moved, lost[:5]
    # And every prediction up to a symbol's first lost snapshot carries the single worker's features and cold
    # mark: the moved symbols continued from the handed-over state, not from a cold one
    first_gap: dict[str, int] = {}
    for s, ts in lost:
        first_gap.setdefault(s, ts)
    exact = [k for k in out if k[1] < first_gap.get(k[0], 1 << 62)]
    differ = [k for k in exact if out[k][0] != reference[k][0]]
    moved_symbols = [s for s in JOIN_SYMBOLS if partition_of(s, P) in moved]
    print(
        f"\nRESULT core join: moved units={sorted(moved)} moved symbols={len(moved_symbols)} "
        f"lost={len(lost)} of {len(inputs)} exact={len(exact)} per worker={counts}"
    )
    assert moved_symbols, "no symbol of the stream moved: the join tested nothing"
    assert not differ, f"{len(differ)} of {len(exact)} predictions differ, e.g. {differ[:3]}"


async def _until_balanced(url: str, n: int, timeout: float = 20.0) -> None:
    """Wait until ``n`` members hold the leases, each the units the shared assignment gives it."""
    holders: dict[int, str | None] = {}
    for _ in range(int(timeout / 0.1)):
        holders = await _holders(url)
        members = {h for h in holders.values() if h}
        want = assign(members, units(P))
        if len(members) == n and all(holders[u] == m for m, us in want.items() for u in us):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"partitions not balanced over {n} workers: {holders}")

"""A three-node NATS cluster, MARKET_SNAPSHOTS replicated three times: the stream's leader killed mid-stream; one
of two partitioned workers killed mid-stream.

Every snapshot the publisher got a JetStream acknowledgement for was stored on a quorum, so it must be
predicted (or, redelivered behind newer snapshots of its symbol, dead-lettered as ``out_of_order``) after
the two survivors elect a new leader. The worker is given all three URLs; the test's sink listens on the
survivors only, so it never misses what they route to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import nats.errors
import pytest

from spark_ml.core import subjects
from spark_ml.core.partition import server_mappings
from spark_ml.worker.cluster import MEMBERS_BUCKET, STATE_BUCKET
from spark_ml.worker.cluster.leases import LEASES_BUCKET
from tests.support.cluster import NatsCluster
from tests.support.connections import client
from tests.support.jetstream import add_predictions_stream, publish_until_acked, read_predictions
from tests.support.lifecycle import until
from tests.support.messages import Sink, snapshot, ts_of
from tests.support.processes import SpawnWorker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

N = 2000
SYMBOLS = 8


async def test_acknowledged_snapshots_survive_the_stream_leader_being_killed(
    cluster: NatsCluster, spawn_worker: SpawnWorker
) -> None:
    # Given a jetstream worker connected to all three nodes, creating the stream with three replicas, and the
    # predictions stored in a stream of three replicas too. (Published on core NATS only, the predictions the
    # worker had handed to the node it was connected to die with that node when it is the one killed: core NATS
    # is at-most-once. Stored, an input is acked only after its prediction's PubAck, so nothing acked is lost.)
    async with client(cluster.url) as admin:
        await add_predictions_stream(admin.jetstream(), num_replicas=3, duplicate_window=120.0)
    # max_deliver: a prediction waits out the election (PubAck timeout 2 s + nak delay 1 s an attempt) before
    # its input is dead-lettered as undeliverable.
    worker = await spawn_worker(
        cluster.url, mode="jetstream", js_replicas=3, ack_wait_s=2, batch_max=64, max_deliver=30
    ).ready()
    async with client(cluster.url) as nc:
        js = nc.jetstream()
        info = await js.stream_info(subjects.JS_STREAM)
        assert info.config.num_replicas == 3 and info.cluster is not None and info.cluster.leader
        victim_name = info.cluster.leader
        victim = cluster.node(victim_name)
        survivors = ",".join(node.url for node in cluster.nodes if node is not victim)
        async with client(survivors) as sink_nc:
            dlq = await Sink.on(sink_nc, subjects.DLQ)

            # When snapshots are published (each retried until acknowledged, for at most 20 s) and the
            # stream's leader is SIGKILLed a third of the way through
            acked: set[int] = set()
            gave_up: set[int] = set()
            stalls: list[float] = []

            async def publish() -> None:
                for i in range(N):
                    symbol = f"C{i % SYMBOLS}"
                    start = time.monotonic()
                    try:
                        await publish_until_acked(
                            js, subjects.snapshot_for(symbol), snapshot(i, symbol), f"in-{i}", start + 20
                        )
                    except Exception:
                        gave_up.add(i)
                        continue
                    acked.add(i)
                    stalls.append(time.monotonic() - start)

            publisher = asyncio.create_task(publish())
            try:
                await until(lambda: len(acked) >= N // 3, 30, "a third acknowledged")
                await asyncio.to_thread(victim.kill)
                await asyncio.wait_for(publisher, 60)
            finally:
                publisher.cancel()
            new_leader = (await js.stream_info(subjects.JS_STREAM)).cluster

            # Then every acknowledged snapshot is predicted (its prediction stored) or dead-lettered as out of order
            predicted: set[int] = set()

            async def accounted() -> set[int]:
                with contextlib.suppress(nats.errors.Error, TimeoutError):  # the JS API may still be electing
                    predicted.update(ts_of(data) for data, _ in await read_predictions(js))
                return predicted | set(dlq.reasons())

            start = time.monotonic()
            while not acked <= await accounted() and time.monotonic() - start < 30:
                await asyncio.sleep(0.5)
            waited = time.monotonic() - start
            if not acked <= await accounted():
                missing = sorted(acked - await accounted())
                by_symbol: dict[str, int] = {}
                for i in missing:
                    by_symbol[f"C{i % SYMBOLS}"] = by_symbol.get(f"C{i % SYMBOLS}", 0) + 1
                raise AssertionError(
                    f"{len(missing)} of {len(acked)} acknowledged snapshots neither predicted nor dead-lettered "
                    f"within 30 s (killed {victim_name}): ids {missing[:10]}..., per symbol {by_symbol}"
                )
            print(
                f"\nRESULT cluster: killed={victim_name} (stream leader) new_leader="
                f"{new_leader.leader if new_leader else None} acked={len(acked)} gave_up={len(gave_up)} "
                f"predicted={len(predicted)} dead_letters={len(dlq.msgs)} "
                f"longest_publish_stall={max(stalls):.1f}s catch_up_after_publisher={waited:.1f}s"
            )
            assert set(dlq.reasons().values()) <= {"out_of_order"}, dlq.reasons()
            assert new_leader is not None and new_leader.leader not in (None, victim_name)
            assert len(acked) > N // 2  # the cluster kept accepting writes after the loss
            assert worker.proc is not None and worker.proc.poll() is None


async def test_partitioned_workers_on_a_cluster_lose_nothing_when_one_is_killed(
    cluster: NatsCluster, spawn_worker: SpawnWorker
) -> None:
    # Given two partitioned jetstream workers on the three nodes (stream, consumers and KV buckets replicated
    # three times), with short pin and member TTLs
    settings: dict[str, object] = {
        "mode": "jetstream",
        "js_replicas": 3,
        "partitions": 8,
        "member_ttl_s": 2.0,
        "pin_ttl_s": 1.0,
        "checkpoint_s": 0.2,
        "ack_wait_s": 30.0,
        "batch_max": 64,
    }
    victim = await spawn_worker(cluster.url, **settings).ready(30)
    survivor = await spawn_worker(cluster.url, **settings).ready(30)
    async with client(cluster.url) as nc:
        js = nc.jetstream()
        raw, dlq = await Sink.on(nc, subjects.PREDICTION), await Sink.on(nc, subjects.DLQ)

        # When snapshots are published (each until acknowledged) and one worker is SIGKILLed a third of the way
        acked: set[int] = set()

        async def publish() -> None:
            deadline = time.monotonic() + 60
            for i in range(N):
                symbol = f"C{i % SYMBOLS}"
                await publish_until_acked(js, subjects.snapshot_for(symbol), snapshot(i, symbol), f"in-{i}", deadline)
                acked.add(i)

        publisher = asyncio.create_task(publish())
        try:
            await until(lambda: len(acked) >= N // 3, 30, "a third acknowledged")
            victim.kill()
            await asyncio.wait_for(publisher, 60)
        finally:
            publisher.cancel()

        # Then the survivor takes the dead worker's partitions over (after its pins and member key lapse) from
        # their checkpoints: every snapshot is predicted, none is refused (replayed in order), and it owns every unit
        waited = await until(lambda: acked <= set(raw.ids()), 30, "every acknowledged snapshot predicted")
        deadline = time.monotonic() + 10
        while (owned := (await survivor.scrape()).total("ml_partitions_owned")) < 9:  # 8 partitions + forwarder
            assert time.monotonic() < deadline, f"the survivor owns {owned} units"
            await asyncio.sleep(0.2)
        print(
            f"\nRESULT cluster partitioned: acked={len(acked)} predicted={len(set(raw.ids()))} "
            f"dead_letters={len(dlq.msgs)} survivor_owns={owned:.0f} catch_up_after_publisher={waited:.1f}s"
        )
        assert len(acked) == N
        assert dlq.msgs == [], dlq.reasons()
        assert survivor.proc is not None and survivor.proc.poll() is None


async def test_partitioned_core_workers_on_a_cluster_replicate_their_buckets_and_take_over(
    tmp_path: Path, spawn_worker: SpawnWorker
) -> None:
    # Given two core-mode partitioned workers on three nodes with the partition mapping and js_replicas=3
    settings: dict[str, object] = {"js_replicas": 3, "partitions": 8, "member_ttl_s": 2.0, "checkpoint_s": 0.2}
    with NatsCluster(3, base_dir=tmp_path / "cluster", mappings=server_mappings(8)) as cluster:
        victim = await spawn_worker(cluster.url, **settings).ready(30)
        survivor = await spawn_worker(cluster.url, **settings).ready(30)
        async with client(cluster.url) as nc:
            js = nc.jetstream()
            # Then every bucket the cluster module keeps (leases, members, checkpoints) has three replicas
            for bucket in (LEASES_BUCKET, MEMBERS_BUCKET, STATE_BUCKET):
                info = await js.stream_info(f"KV_{bucket}")
                assert info.config.num_replicas == 3, (bucket, info.config.num_replicas)
            # And when one worker is killed, the other ends up owning every unit (8 partitions + the forwarder)
            victim.kill()
            deadline = time.monotonic() + 15
            while (owned := (await survivor.scrape()).total("ml_partitions_owned")) < 9:
                assert time.monotonic() < deadline, f"the survivor owns {owned} units"
                await asyncio.sleep(0.2)
            # And it predicts for every symbol
            raw = await Sink.on(nc, subjects.PREDICTION)
            for i in range(40):
                await nc.publish(subjects.snapshot_for(f"C{i % SYMBOLS}"), snapshot(i, f"C{i % SYMBOLS}"))
            await until(lambda: len(raw.msgs) >= 40, 15, "40 predictions from the survivor")

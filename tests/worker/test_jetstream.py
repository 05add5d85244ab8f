"""JetStream mode: ack after publish; poison dead-lettered and terminated; stored predictions; a fast stop.

Each behaviour holds for both intakes (``INTAKES``): the shared durable of a solo worker (``SPARK_ML_SOLO``) and
the partitioned intake (one pinned consumer per unit), whose state is read from every consumer of the stream.
What only the shared durable has (its in-flight bound, ordering across bare and symbol subjects) runs solo."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import msgpack
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, StreamConfig

import spark_ml.worker.intake.jetstream
from spark_ml.core import subjects
from spark_ml.core.partition import DEFAULT_PARTITIONS, stream_transform
from spark_ml.worker.app import WorkerApp
from spark_ml.worker.intake import JetStreamIntake, PartitionedJetStreamIntake
from spark_ml.worker.intake.jetstream import JetStreamOutcomes
from spark_ml.worker.natsio import jsadmin
from tests.support.connections import RawPublisher
from tests.support.jetstream import INTAKES, PREDICTIONS, Intake, add_predictions_stream, intake_state
from tests.support.messages import Collector


async def _consumer_settled(nc: Client, expect_acked: int, timeout: float = 10.0) -> Intake:
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await intake_state(js)
        if state.ack_floor >= expect_acked and state.settled:
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"consumers not settled: {state}")
        await asyncio.sleep(0.05)


def _intake_is(app: WorkerApp, solo: bool) -> JetStreamOutcomes:
    intake = app.intake
    assert isinstance(intake, JetStreamIntake if solo else PartitionedJetStreamIntake)
    return intake


@INTAKES
async def test_stream_and_consumer_are_created_and_everything_is_acked(
    nc: Client, worker_factory, collect, solo: bool
) -> None:
    # Given a jetstream-mode worker
    _intake_is(await worker_factory(mode="jetstream", solo=solo), solo)
    preds = await collect(subjects.PREDICTION)
    # When snapshots are published on both subject forms: solo, one symbol on both (the shared durable keeps
    # their order); partitioned, each symbol on one kind (the bare ones take the forwarder's hop, and a mix is
    # documented as unordered)
    for i in range(200):
        subject = subjects.snapshot_for("JS") if i % 2 else subjects.SNAPSHOT
        symbol = "JS" if solo or i % 2 else "JB"
        await nc.jetstream().publish(subject, msgpack.packb({"ts": i, "mid": 10.0 + i % 5, "symbol": symbol}))
    # Then every one is predicted, in order (per symbol), and acknowledged
    await preds.wait(200)
    bodies = preds.bodies()
    if solo:
        assert [b["ts"] for b in bodies] == list(range(200))
    else:
        assert [b["ts"] for b in bodies if b["symbol"] == "JS"] == list(range(1, 200, 2))
        assert [b["ts"] for b in bodies if b["symbol"] == "JB"] == list(range(0, 200, 2))
    await _consumer_settled(nc, 200)
    # And each prediction carries Nats-Msg-Id derived from its input's stream sequence
    assert all(m.headers and m.headers["Nats-Msg-Id"].startswith(f"{subjects.JS_STREAM}-") for m in preds.msgs)
    assert len({m.headers["Nats-Msg-Id"] for m in preds.msgs if m.headers}) == 200


@INTAKES
async def test_poison_message_is_dead_lettered_with_sequence_and_terminated(
    nc: Client, worker_factory, collect, solo: bool
) -> None:
    _intake_is(await worker_factory(mode="jetstream", ack_wait_s=1.0, solo=solo), solo)
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
    assert (await intake_state(js)).redelivered == 0


@INTAKES
async def test_a_stored_snapshot_whose_subject_is_not_utf8_is_dead_lettered_and_terminated(
    nc: Client, nats_url: str, worker_factory, collect, solo: bool
) -> None:
    # Given a worker, and a snapshot stored under a subject that is not UTF-8 (a hostile publisher's)
    _intake_is(await worker_factory(mode="jetstream", ack_wait_s=1.0, solo=solo), solo)
    preds, dlq = await collect(subjects.PREDICTION), await collect(subjects.DLQ)
    bad = subjects.snapshot_for("").encode() + b"\xff\xfe"
    async with RawPublisher.connect(nats_url) as raw:
        await raw.send(b"PUB %s 3\r\nabc\r\n" % bad)
    await nc.jetstream().publish(subjects.snapshot_for("GOOD"), msgpack.packb({"ts": 1, "mid": 1.0}))
    # Then it is one dead letter (decode, its subject escaped), terminated: never redelivered
    dead = await dlq.wait(1)
    await preds.wait(1)
    assert dead[0].headers[subjects.H_ERROR] == "decode"
    assert dead[0].data == b"abc"
    assert "\\x" in dead[0].headers[subjects.H_SUBJECT]
    await _consumer_settled(nc, 2)
    await asyncio.sleep(1.5)
    assert len(dlq.msgs) == 1
    assert (await intake_state(nc.jetstream())).redelivered == 0


def _worker_proc(nats_url: str, tmp_path, name: str) -> list[str]:
    return [sys.executable, "-c", "from spark_ml.worker.cli import main; raise SystemExit(main())", "worker"]


@INTAKES
async def test_sigkill_of_one_of_two_workers_loses_nothing(nc: Client, nats_url: str, tmp_path, solo: bool) -> None:
    # Given two jetstream workers (sharing the durable consumer, or the partitions), with a short ack wait
    env = {**os.environ, "SPARK_ML_NATS_URL": nats_url, "SPARK_ML_METRICS_PORT": "0", "SPARK_ML_MODE": "jetstream"}
    env.update(SPARK_ML_ACK_WAIT_S="2", SPARK_ML_REGISTRY=str(tmp_path), SPARK_ML_BATCH_MAX="32")
    env.update(SPARK_ML_SOLO=str(solo).lower(), SPARK_ML_MEMBER_TTL_S="2", SPARK_ML_PIN_TTL_S="1")
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


@INTAKES
async def test_with_a_predictions_stream_inputs_are_acked_after_their_prediction_is_stored(
    nc: Client, worker_factory, solo: bool
) -> None:
    # Given a predictions stream of the user's, found by the worker at start
    await add_predictions_stream(nc.jetstream())
    intake = _intake_is(await worker_factory(mode="jetstream", solo=solo), solo)
    assert intake.acked is not None
    # When snapshots flow
    js = nc.jetstream()
    for i in range(300):
        await js.publish(subjects.snapshot_for(f"S{i % 3}"), msgpack.packb({"ts": i, "mid": 10.0 + i % 5}))
    # Then each is stored once with its input's id, and every input is acked
    await _consumer_settled(nc, 300)
    info = await js.stream_info(PREDICTIONS)
    assert info.state.messages == 300
    ids = set()
    for seq in range(1, 301):
        msg = await js.get_msg(PREDICTIONS, seq)
        assert msg.headers is not None
        ids.add(msg.headers["Nats-Msg-Id"])
    assert ids == {f"{subjects.JS_STREAM}-{s}" for s in range(1, 301)}
    assert intake.acked.stored == 300 and intake.acked.refused == 0


@INTAKES
async def test_a_refused_prediction_naks_its_input_and_a_stored_one_acks_it(
    nc: Client, worker_factory, solo: bool
) -> None:
    # Given a predictions stream with room for 5 that refuses the rest
    await add_predictions_stream(nc.jetstream(), max_msgs=5, discard=DiscardPolicy.NEW)
    app = await worker_factory(mode="jetstream", ack_wait_s=5.0, max_deliver=10, batch_max=4, solo=solo)
    _intake_is(app, solo)
    js = nc.jetstream()
    # When 12 snapshots are consumed
    for i in range(12):
        await js.publish(subjects.snapshot_for(f"R{i}"), msgpack.packb({"ts": i, "mid": 10.0}))
    # Then 5 predictions are stored and their inputs acked, while the 7 others keep being redelivered
    # (solo: nak'ed with a delay; partitioned: the unit is taken over again from its checkpoint after a delay,
    # its consumer RESET), never acked, and nothing is dead-lettered before max_deliver
    publish_errors = app.metrics.model_errors.labels("publish_error")
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        state = await intake_state(js)
        if state.redelivered >= 7 if solo else publish_errors._value.get() >= 3:
            break
        assert asyncio.get_running_loop().time() < deadline, f"no redeliveries: {state}"
        await asyncio.sleep(0.1)
    assert (await js.stream_info(PREDICTIONS)).state.messages == 5
    assert state.ack_pending + state.pending >= 7  # the refused ones are still owed
    if solo:  # (partitioned: the last input may be one of the 5 stored, acked on its own unit's consumer)
        assert state.ack_floor < 12
    assert app.metrics.model_errors.labels("publish_error")._value.get() >= 1


@INTAKES
async def test_a_predictions_stream_created_later_is_found(nc: Client, worker_factory, monkeypatch, solo: bool) -> None:
    # Given a worker started with no predictions stream (core publish), checking often
    monkeypatch.setattr(spark_ml.worker.intake.jetstream, "_OUTPUT_CHECK_S", 0.1)
    intake = _intake_is(await worker_factory(mode="jetstream", solo=solo), solo)
    assert intake.acked is None
    # When the user creates one, the worker switches to PubAcks; and back when it is deleted
    await add_predictions_stream(nc.jetstream())
    deadline = asyncio.get_running_loop().time() + 5
    while intake.acked is None:
        assert asyncio.get_running_loop().time() < deadline, "stream not found"
        await asyncio.sleep(0.05)
    await nc.jetstream().publish(subjects.SNAPSHOT, msgpack.packb({"ts": 1, "mid": 1.0, "symbol": "L"}))
    await _consumer_settled(nc, 1)
    assert (await nc.jetstream().stream_info(PREDICTIONS)).state.messages == 1
    await nc.jetstream().delete_stream(PREDICTIONS)
    while intake.acked is not None:
        assert asyncio.get_running_loop().time() < deadline + 5, "deleted stream still used"
        await asyncio.sleep(0.05)


@INTAKES
async def test_forced_off_keeps_core_publish_even_with_a_stream(nc: Client, worker_factory, solo: bool) -> None:
    await add_predictions_stream(nc.jetstream())
    app = await worker_factory(mode="jetstream", js_output_ack="off", solo=solo)
    assert _intake_is(app, solo).acked is None


async def _backlog(nc: Client, n: int, prefix: str, *, partitioned: bool = False) -> None:
    """``n`` snapshots waiting in MARKET_SNAPSHOTS before any worker runs (the worker reuses the stream; a
    partitioned one needs the stream's transform from the start: messages stored before keep their subject)."""
    js = nc.jetstream()
    stream_subjects = [subjects.SNAPSHOT, subjects.SNAPSHOT_WILDCARD]
    if partitioned:
        transform = stream_transform(DEFAULT_PARTITIONS)
        await jsadmin.ensure_stream(nc, subjects.JS_STREAM, subjects=stream_subjects, transform=transform)
    else:
        await js.add_stream(StreamConfig(name=subjects.JS_STREAM, subjects=stream_subjects))
    for i in range(n):
        await nc.publish(subjects.snapshot_for(f"{prefix}{i % 7}"), msgpack.packb({"ts": i, "mid": 10.0}))
    await nc.flush()
    deadline = asyncio.get_running_loop().time() + 20
    while (await js.stream_info(subjects.JS_STREAM)).state.messages < n:
        assert asyncio.get_running_loop().time() < deadline, "backlog not stored"
        await asyncio.sleep(0.05)


async def test_un_acked_messages_stay_within_the_in_flight_bound(nc: Client, worker_factory) -> None:
    # Given 3000 snapshots waiting and a worker allowed 64 in flight
    js = nc.jetstream()
    await _backlog(nc, 3000, "B")
    app = await worker_factory(mode="jetstream", js_in_flight=64, batch_max=32, solo=True)
    intake = app.intake
    assert isinstance(intake, JetStreamIntake)
    pull = intake.pull
    assert pull is not None
    # Then while the backlog drains, the worker never holds more than 64 requested or un-acked (exact: its own
    # count), and the server sees no more un-acked than that plus the acks it has not applied yet. The server
    # applies acks from its own queue, apart from the pull requests that follow them on the connection: on a
    # busy machine a whole window of acks was seen still queued when the next window was served (128), never
    # more (1 in 12 runs beside other test runs); 2 x 64 is the bound that holds while acks are being applied.
    peak_local = peak_server = 0
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        peak_local = max(peak_local, pull.unsettled + pull.requested)
        info = await js.consumer_info(subjects.JS_STREAM, subjects.JS_CONSUMER)
        peak_server = max(peak_server, info.num_ack_pending)
        peak_local = max(peak_local, pull.unsettled + pull.requested)
        if info.ack_floor.stream_seq >= 3000 and info.num_ack_pending == 0:
            break
        assert asyncio.get_running_loop().time() < deadline, f"not drained: {info}"
        await asyncio.sleep(0.002)
    assert 0 < peak_local <= 64
    assert 0 < peak_server <= 2 * 64
    assert app.processor is not None and app.processor.published == 3000


@INTAKES
async def test_stop_under_backlog_is_fast_and_leaves_nothing_to_the_ack_wait(
    nc: Client, settings_factory, solo: bool
) -> None:
    # Given a worker working through a backlog
    js = nc.jetstream()
    await _backlog(nc, 30000, "T", partitioned=not solo)
    app = WorkerApp(settings_factory(mode="jetstream", solo=solo), handle_signals=False)
    await app.start()
    _intake_is(app, solo)
    try:
        while app.processor is not None and app.processor.published < 2000:
            await asyncio.sleep(0.001)
    finally:
        # When it stops mid-stream
        t0 = time.monotonic()
        await app.stop()
        took = time.monotonic() - t0
    # Then within a second, with everything it was delivered acked: nothing waits for the ack wait
    assert took < 1.0
    deadline = time.monotonic() + 2  # the server applies acks asynchronously; the ack wait is 30 s
    while (state := await intake_state(js)).ack_pending:
        assert time.monotonic() < deadline, f"left un-acked: {state}"
        await asyncio.sleep(0.02)
    assert state.waiting == 0
    assert app.processor is not None
    assert app.processor.published < 30000
    if solo:
        assert state.ack_floor == app.processor.published
    else:  # each unit's consumer acked a prefix of its partition: the rest is all still to deliver
        assert state.pending == 30000 - app.processor.published

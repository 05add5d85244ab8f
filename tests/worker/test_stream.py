"""The stream path end to end over a real nats-server: snapshots in, predictions and dead letters out."""

from __future__ import annotations

import asyncio
import json
import math

import msgpack
import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.contracts import Prediction
from tests.support.messages import SEED, decode_any


async def test_seed_payload_msgpack_and_json(nc: Client, worker_factory, collect) -> None:
    # Given a worker and a subscriber on ml.prediction
    await worker_factory()
    preds = await collect(subjects.PREDICTION)
    # When the seed's exact example is published in msgpack and then in JSON
    await nc.publish(subjects.SNAPSHOT, msgpack.packb(SEED))
    await nc.publish(subjects.SNAPSHOT, json.dumps(SEED).encode(), headers={"Content-Type": "application/json"})
    msgs = await preds.wait(2)
    # Then both are predicted, each reply in the encoding of its request, and valid Predictions
    assert msgs[0].data[:1] != b"{" and msgs[1].data[:1] == b"{"
    for msg in msgs:
        pred = Prediction.model_validate(decode_any(msg.data))
        assert pred.ts == SEED["ts"] and pred.symbol == "_"
        assert pred.model_version == "baseline"
        assert pred.signal in ("buy", "sell", "hold") and 0 <= pred.score <= 1
        assert pred.features["rsi_14"] == 55.0 and pred.features["spread_bp"] == 2.0
        assert pred.latency_ms >= 0


async def test_symbol_from_subject_and_payload(nc: Client, worker_factory, collect) -> None:
    await worker_factory()
    preds = await collect(subjects.PREDICTION)
    await nc.publish(subjects.snapshot_for("ETHUSD"), msgpack.packb(SEED))
    await nc.publish(subjects.snapshot_for("ETHUSD"), msgpack.packb({**SEED, "symbol": "SOLUSD"}))
    await preds.wait(2)
    assert [b["symbol"] for b in preds.bodies()] == ["ETHUSD", "SOLUSD"]


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("not msgpack or json", b"\xc1\xc1garbage", "decode"),
    ("broken json", b'{"ts": 1, "mid":', "decode"),
    ("empty", b"", "decode"),
    ("a list, not a map", msgpack.packb([1, 2, 3]), "schema"),
    ("missing ts", msgpack.packb({"mid": 1.0}), "schema"),
    ("missing mid", msgpack.packb({"ts": 1}), "schema"),
    ("string mid", msgpack.packb({"ts": 1, "mid": "45000"}), "schema"),
    ("float ts", msgpack.packb({"ts": 1.5, "mid": 1.0}), "schema"),
    ("bool mid", msgpack.packb({"ts": 1, "mid": True}), "schema"),
    ("NaN mid", msgpack.packb({"ts": 1, "mid": math.nan}), "schema"),
    ("inf spread", msgpack.packb({"ts": 1, "mid": 1.0, "spreadBp": math.inf}), "schema"),
    ("NaN in JSON", b'{"ts": 1, "mid": NaN}', "schema"),
    ("negative price", msgpack.packb({"ts": 1, "mid": -5.0}), "schema"),
    ("zero price", msgpack.packb({"ts": 1, "mid": 0}), "schema"),
    ("negative volume", msgpack.packb({"ts": 1, "mid": 1.0, "vol1m": -1}), "schema"),
    ("rsi over 100", msgpack.packb({"ts": 1, "mid": 1.0, "rsi14": 101}), "schema"),
    ("symbol with space", msgpack.packb({"ts": 1, "mid": 1.0, "symbol": "A B"}), "schema"),
    ("oversized", msgpack.packb({"ts": 1, "mid": 1.0, "pad": "x" * 70_000}), "payload_too_large"),
]


async def test_bad_input_goes_to_dlq_and_good_messages_around_it_are_predicted(
    nc: Client, worker_factory, collect
) -> None:
    # Given a worker, and listeners on predictions and dead letters
    app = await worker_factory()
    preds = await collect(subjects.PREDICTION)
    dlq = await collect(subjects.DLQ)
    # When every kind of bad input is published, each between two good snapshots
    subject = subjects.snapshot_for("BAD")
    ts = SEED["ts"]
    for i, (_, raw, _) in enumerate(BAD_INPUTS):
        await nc.publish(subject, msgpack.packb({**SEED, "ts": ts + 2 * i}))
        await nc.publish(subject, raw)
    await nc.publish(subject, msgpack.packb({**SEED, "ts": ts + 10_000}))
    # Then every good one is predicted and every bad one is dead-lettered unchanged with its reason
    await preds.wait(len(BAD_INPUTS) + 1)
    dead = await dlq.wait(len(BAD_INPUTS))
    assert [m.data for m in dead] == [raw for _, raw, _ in BAD_INPUTS]
    for msg, (name, _, reason) in zip(dead, BAD_INPUTS, strict=True):
        assert msg.headers is not None, name
        assert msg.headers[subjects.H_ERROR] == reason, name
        assert msg.headers[subjects.H_ERROR_MESSAGE], name
        assert msg.headers[subjects.H_SUBJECT] == subject, name
    # And the worker is still running and counted them
    assert app.ready()
    assert app.metrics.model_errors.labels("invalid_input")._value.get() == len(BAD_INPUTS)


async def test_out_of_order_snapshot_is_dead_lettered(nc: Client, worker_factory, collect) -> None:
    await worker_factory()
    preds = await collect(subjects.PREDICTION)
    dlq = await collect(subjects.DLQ)
    subject = subjects.snapshot_for("OOO")
    late = msgpack.packb({**SEED, "ts": SEED["ts"] - 1})
    await nc.publish(subject, msgpack.packb(SEED))
    await nc.flush()
    await preds.wait(1)
    await nc.publish(subject, late)
    await nc.publish(subject, msgpack.packb({**SEED, "ts": SEED["ts"]}))  # equal ts is accepted
    dead = await dlq.wait(1)
    await preds.wait(2)
    assert dead[0].data == late and dead[0].headers[subjects.H_ERROR] == "out_of_order"


async def test_per_symbol_order_is_kept_under_concurrency(nc: Client, worker_factory, collect) -> None:
    # Given a worker with several shards and small batches, so many batches interleave
    await worker_factory(pool_size=4, batch_max=7)
    preds = await collect(subjects.PREDICTION)
    symbols = [f"S{i}" for i in range(12)]
    n_per = 150
    # When snapshots of 12 symbols are published interleaved, as fast as possible
    for k in range(n_per):
        for sym in symbols:
            await nc.publish(subjects.SNAPSHOT, msgpack.packb({"ts": 1_000 + k, "mid": 100.0 + k % 7, "symbol": sym}))
    await preds.wait(n_per * len(symbols), timeout=30)
    # Then each symbol's predictions come out in the order its snapshots went in, none lost, none doubled
    by_symbol: dict[str, list[int]] = {}
    for body in preds.bodies():
        by_symbol.setdefault(body["symbol"], []).append(body["ts"])
    assert sorted(by_symbol) == sorted(symbols)
    for sym, seq in by_symbol.items():
        assert seq == list(range(1_000, 1_000 + n_per)), sym


async def test_prediction_features_evolve_with_history(nc: Client, worker_factory, collect) -> None:
    # RSI is computed from the symbol's history when the snapshot does not carry it
    await worker_factory()
    preds = await collect(subjects.PREDICTION)
    for k in range(30):
        await nc.publish(subjects.snapshot_for("UP"), msgpack.packb({"ts": k, "mid": 100.0 + k}))
    await preds.wait(30)
    last = preds.bodies()[-1]["features"]
    assert last["rsi_14"] == pytest.approx(100.0)
    assert last["ret_1"] > 0


async def test_worker_keeps_running_after_many_bad_messages(nc: Client, worker_factory, collect) -> None:
    await worker_factory()
    preds = await collect(subjects.PREDICTION)
    for i in range(500):
        await nc.publish(subjects.SNAPSHOT, bytes([i % 256]) * (i % 50 + 1))
    await nc.publish(subjects.SNAPSHOT, msgpack.packb(SEED))
    await preds.wait(1)
    await asyncio.sleep(0)


async def test_failed_publish_still_dead_letters_the_refused_rows(nc: Client, collect) -> None:
    # A batch with one good and one out-of-order snapshot whose predictions cannot be published: the good
    # one goes to on_publish_failed (JetStream naks it), the refused one is still dead-lettered.
    from spark_ml.core.codec import SnapshotParser
    from spark_ml.core.engine import Engine
    from spark_ml.core.models import BaselineModel
    from spark_ml.worker.metrics import Metrics
    from spark_ml.worker.pipeline.stream import StreamProcessor

    dead = await collect(subjects.DLQ)
    processor = StreamProcessor(nc, Engine(BaselineModel()), Metrics(), shards=1)
    failed: list[int] = []

    async def refuse(snaps, payloads) -> None:
        raise ConnectionError("the stream refused the batch")

    async def on_failed(snaps) -> None:
        failed.extend(s.ts for s in snaps)

    processor.publish = refuse
    processor.on_publish_failed = on_failed
    parse = SnapshotParser().parse
    first = parse(msgpack.packb({"ts": 2000, "mid": 1.1, "symbol": "S"}), subjects.SNAPSHOT, None, 0.0)
    await processor.handle_batch(0, [first])
    late = parse(msgpack.packb({"ts": 1000, "mid": 1.1, "symbol": "S"}), subjects.SNAPSHOT, None, 0.0)
    good = parse(msgpack.packb({"ts": 3000, "mid": 1.2, "symbol": "S"}), subjects.SNAPSHOT, None, 0.0)
    await processor.handle_batch(0, [late, good])
    letters = await dead.wait(1)
    assert failed == [2000, 3000]
    assert letters[0].headers and letters[0].headers.get(subjects.H_ERROR) == "out_of_order"
    assert processor.published == 0 and processor.dead_lettered == 1

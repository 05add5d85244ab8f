"""The stream pipeline on the in-memory intake: snapshots in, predictions and dead letters out, no server.

The same flows on a real nats-server, in core and JetStream mode, are the contract tests of
``test_intake_contract.py`` (every kind of bad input, per-symbol order).
"""

from __future__ import annotations

import json

import msgpack
import pytest

from spark_ml.core import subjects
from spark_ml.core.contracts import Prediction
from tests.support.lifecycle import until
from tests.support.messages import SEED, decode_any


async def test_seed_payload_msgpack_and_json(memory_pipeline) -> None:
    # Given a pipeline
    p = await memory_pipeline()
    # When the seed's exact example is published in msgpack and then in JSON
    await p.intake.put(msgpack.packb(SEED))
    await p.intake.put(json.dumps(SEED).encode(), headers={"Content-Type": "application/json"})
    await p.output.wait(predictions=2)
    msgs = p.output.predictions
    # Then both are predicted, each reply in the encoding of its request, and valid Predictions
    assert msgs[0].data[:1] != b"{" and msgs[1].data[:1] == b"{"
    for msg in msgs:
        pred = Prediction.model_validate(decode_any(msg.data))
        assert pred.ts == SEED["ts"] and pred.symbol == "_"
        assert pred.model_version == "baseline"
        assert pred.signal in ("buy", "sell", "hold") and 0 <= pred.score <= 1
        assert pred.features["rsi_14"] == 55.0 and pred.features["spread_bp"] == 2.0
        assert pred.latency_ms >= 0


async def test_symbol_from_subject_and_payload(memory_pipeline) -> None:
    p = await memory_pipeline()
    await p.intake.put(msgpack.packb(SEED), subjects.snapshot_for("ETHUSD"))
    await p.intake.put(msgpack.packb({**SEED, "symbol": "SOLUSD"}), subjects.snapshot_for("ETHUSD"))
    await p.output.wait(predictions=2)
    assert [decode_any(m.data)["symbol"] for m in p.output.predictions] == ["ETHUSD", "SOLUSD"]


async def test_out_of_order_snapshot_is_dead_lettered(memory_pipeline) -> None:
    p = await memory_pipeline()
    subject = subjects.snapshot_for("OOO")
    late = msgpack.packb({**SEED, "ts": SEED["ts"] - 1})
    await p.intake.put(msgpack.packb(SEED), subject)
    await p.output.wait(predictions=1)
    await p.intake.put(late, subject)
    await p.intake.put(msgpack.packb({**SEED, "ts": SEED["ts"]}), subject)  # equal ts is accepted
    await p.output.wait(predictions=2, dead_letters=1)
    dead = p.output.dead_letters
    assert dead[0].data == late and dead[0].headers and dead[0].headers[subjects.H_ERROR] == "out_of_order"


async def test_prediction_features_evolve_with_history(memory_pipeline) -> None:
    # RSI is computed from the symbol's history when the snapshot does not carry it
    p = await memory_pipeline()
    for k in range(30):
        await p.intake.put(msgpack.packb({"ts": k, "mid": 100.0 + k}), subjects.snapshot_for("UP"))
    await p.output.wait(predictions=30)
    last = decode_any(p.output.predictions[-1].data)["features"]
    assert last["rsi_14"] == pytest.approx(100.0)
    assert last["ret_1"] > 0


async def test_worker_keeps_running_after_many_bad_messages(memory_pipeline) -> None:
    p = await memory_pipeline()
    for i in range(500):
        await p.intake.put(bytes([i % 256]) * (i % 50 + 1))
    await p.intake.put(msgpack.packb(SEED))
    await p.output.wait(predictions=1)


async def test_failed_publish_still_dead_letters_the_refused_rows(memory_pipeline) -> None:
    # A batch with one good and one out-of-order snapshot whose predictions cannot be published: the good
    # one is nak'ed (JetStream redelivers it), the refused one is still dead-lettered (and terminated).
    p = await memory_pipeline(at_least_once=True, shards=1)
    p.output.failure = ConnectionError("the stream refused the batch")
    first = await p.intake.put(msgpack.packb({"ts": 2000, "mid": 1.1, "symbol": "S"}))
    await until(lambda: bool(first.settled), 5, "the first batch settled")
    # put back to back, with no await that yields between them: the shard takes both in one batch
    late = await p.intake.put(msgpack.packb({"ts": 1000, "mid": 1.1, "symbol": "S"}))
    await p.intake.put(msgpack.packb({"ts": 3000, "mid": 1.2, "symbol": "S"}))
    await p.output.wait(dead_letters=1)
    await until(lambda: all(m.settled for m in p.intake.delivered), 5, "every message settled")
    failed = [decode_any(m.data)["ts"] for m in p.intake.delivered if m.settled == ["nak"]]
    assert failed == [2000, 3000] and late.settled == ["term"]
    assert p.output.dead_letters[0].reason == "out_of_order"
    assert p.processor.published == 0 and p.processor.dead_lettered == 1

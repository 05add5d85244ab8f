"""The Python client against a real nats-server and a real worker: publish, follow, request, errors, encodings."""

from __future__ import annotations

import asyncio
import json

import msgpack
import pytest

from spark_ml.client import (
    InvalidInput,
    MarketSnapshot,
    ModelInfo,
    PayloadTooLarge,
    Prediction,
    RegistryError,
    RequestTimeout,
    SparkMlClient,
    Unavailable,
    connect,
)
from spark_ml.core import subjects
from spark_ml.core.partition import DEFAULT_PARTITIONS, partition_of, predict_part
from spark_ml.core.subjects import QUEUE_GROUP
from tests.support.messages import SEED

T0 = SEED["ts"]


def snaps(symbol: str, n: int, start: int = 0) -> list[MarketSnapshot]:
    return [
        MarketSnapshot(ts=T0 + i * 60_000, mid=100.0 + (i % 5) * 0.1 + i * 0.01, symbol=symbol) for i in range(start, n)
    ]


async def take(stream, n: int, timeout: float = 10.0) -> list[Prediction]:
    async def go() -> list[Prediction]:
        out = []
        async for p in stream:
            out.append(p)
            if len(out) == n:
                break
        return out

    return await asyncio.wait_for(go(), timeout)


async def test_publish_typed_and_dicts_and_follow_predictions_in_order(nats_url, worker_factory, collect, uid):
    # Given a worker, a client, and a raw subscriber on the snapshot subjects
    await worker_factory()
    raw = await collect(f"{subjects.SNAPSHOT}.>")
    async with connect(nats_url) as ml, ml.predictions() as stream:
        sym = f"C{uid}"
        # When typed snapshots and then a dict with the wire names are published
        typed = snaps(sym, 10)
        await ml.publish_many(typed)
        await ml.publish({"ts": T0 + 10 * 60_000, "mid": 101.5, "spreadBp": 2, "symbol": sym})
        got = await take(stream, 11)
    # Then predictions come back as typed objects, in order, one per snapshot
    assert all(isinstance(p, Prediction) for p in got)
    assert [p.ts for p in got] == [s.ts for s in typed] + [T0 + 10 * 60_000]
    assert {p.symbol for p in got} == {sym} and got[-1].features["spread_bp"] == 2.0
    # And each snapshot went on market.snapshot.<SYMBOL> in msgpack, saying so in Content-Type
    msgs = await raw.wait(11)
    assert {m.subject for m in msgs} <= {
        subjects.snapshot_for(sym),
        *(f"{subjects.SNAPSHOT}.part.{n}.{sym}" for n in range(DEFAULT_PARTITIONS)),
    }
    assert all(m.headers and m.headers["Content-Type"] == "application/msgpack" for m in msgs)
    assert msgpack.unpackb(msgs[-1].data) == {"ts": T0 + 10 * 60_000, "mid": 101.5, "spreadBp": 2.0, "symbol": sym}


async def test_json_encoding_round_trip(nats_url, worker_factory, collect, uid):
    # Given a worker and a client that speaks JSON
    await worker_factory(serve_predict=True)
    out = await collect(subjects.PREDICTION)
    async with connect(nats_url, encoding="json") as ml, ml.predictions() as stream:
        await ml.publish(MarketSnapshot(ts=T0, mid=45000.0, symbol=f"J{uid}", rsi14=55.0))
        [p] = await take(stream, 1)
        # When it requests a prediction too
        asked = await ml.predict({**SEED, "symbol": f"J{uid}", "ts": T0 + 1})
    # Then the stream's prediction of a JSON snapshot is JSON on the wire, and both decode to typed objects
    [msg] = await out.wait(1)
    assert msg.data[:1] == b"{" and json.loads(msg.data)["symbol"] == f"J{uid}"
    assert p.features["rsi_14"] == 55.0 and asked.ts == T0 + 1 and asked.features["rsi_14"] == 55.0


async def test_predict_directly_and_through_ml_predict_agree_with_the_stream(nats_url, worker_factory, uid):
    # Given a worker that has seen a symbol's history on the stream
    await worker_factory(serve_predict=True)
    sym = f"P{uid}"
    async with connect(nats_url) as ml:
        async with ml.predictions() as stream:
            await ml.publish_many(snaps(sym, 40))
            seen = await take(stream, 40)
        nxt = MarketSnapshot(ts=T0 + 40 * 60_000, mid=100.9, symbol=sym)
        # When the next snapshot is asked for on the partition's subject, and through plain ml.predict
        direct = await ml.predict(nxt)
        relayed = await ml.predict(nxt, direct=False)
        # And then published on the stream
        async with ml.predictions() as stream:
            await ml.publish(nxt)
            [streamed] = await take(stream, 1)
    # Then all three carry the same features and score (the request read the state without advancing it)
    assert seen[-1].ts == T0 + 39 * 60_000
    assert direct.features == relayed.features == streamed.features
    assert direct.score == relayed.score == streamed.score and direct.model_version == "baseline"


async def test_predict_refusals_raise_the_workers_errors(nats_url, worker_factory, uid):
    await worker_factory(serve_predict=True)
    sym = f"E{uid}"
    async with connect(nats_url) as ml:
        # An unknown model version: the worker's 400 unknown_model
        with pytest.raises(RegistryError) as unknown:
            await ml.predict({**SEED, "symbol": sym}, model="no-such-version")
        assert unknown.value.code == "unknown_model" and unknown.value.status == 400
        # A snapshot older than the symbol's last one: the worker's out_of_order
        async with ml.predictions() as stream:
            await ml.publish({**SEED, "symbol": sym})
            await take(stream, 1)
        with pytest.raises(InvalidInput) as late:
            await ml.predict({**SEED, "symbol": sym, "ts": T0 - 1})
        assert late.value.code == "out_of_order" and "older" in late.value.message
        # A body over the worker's limit: 413
        with pytest.raises(PayloadTooLarge) as big:
            await ml.predict({**SEED, "symbol": sym}, model="x" * 70_000)
        assert big.value.status == 413
        # A snapshot that breaks the contract is refused before it is sent, as the worker would
        for bad in ({"ts": T0, "mid": -1.0}, {"ts": "1", "mid": 1.0}, {"mid": 1.0}, {"ts": T0, "mid": float("nan")}):
            with pytest.raises(InvalidInput) as refused:
                await ml.predict(bad)
            assert refused.value.code == "schema"
            with pytest.raises(InvalidInput):
                await ml.publish(bad)
        with pytest.raises(InvalidInput):
            await ml.publish_many([{**SEED, "symbol": sym}, {"ts": T0}])
        with pytest.raises(InvalidInput) as not_a_map:
            await ml.publish([T0, 1.0])  # type: ignore[arg-type]
        assert not_a_map.value.code == "schema"


async def test_model_info(nats_url, worker_factory):
    await worker_factory(serve_predict=True)
    async with connect(nats_url) as ml:
        info = await ml.model_info()
    assert isinstance(info, ModelInfo) and info.version == "baseline" and "rsi_14" in info.feature_names


async def test_no_worker_and_no_reply(nats_url, nc, uid):
    async with connect(nats_url, timeout_s=0.3) as ml:
        # No worker at all: unavailable at once
        with pytest.raises(Unavailable) as none:
            await ml.predict({**SEED, "symbol": f"N{uid}"})
        assert none.value.code == "no_worker" and none.value.status == 503
        # A responder that never answers: a timeout, also the stdlib's TimeoutError
        sym = f"S{uid}"
        await nc.subscribe(predict_part(partition_of(sym, DEFAULT_PARTITIONS)), queue=QUEUE_GROUP, cb=_ignore)
        await nc.flush()
        await nc.flush()
        with pytest.raises(TimeoutError) as late:
            await ml.predict({**SEED, "symbol": sym})
        assert isinstance(late.value, RequestTimeout) and late.value.status == 504


async def _ignore(msg) -> None:
    return None


async def test_a_bad_message_on_the_stream_raises_and_the_stream_goes_on(nats_url, nc, uid):
    async with connect(nats_url) as ml, ml.predictions() as stream:
        good = {"ts": 1, "symbol": "X", "score": 0.5, "signal": "hold", "confidence": 0.0, "modelVersion": "m",
                "features": {"a": 1.0}, "latencyMs": 0.1}  # fmt: skip
        await nc.publish(subjects.PREDICTION, b"\xc1 not msgpack")
        await nc.publish(subjects.PREDICTION, json.dumps({"ts": 1}).encode())
        await nc.publish(subjects.PREDICTION, json.dumps(good).encode(), headers={"Content-Type": "application/json"})
        await nc.flush()
        with pytest.raises(InvalidInput) as undecodable:
            await asyncio.wait_for(anext(stream), 5)
        assert undecodable.value.code == "decode"
        with pytest.raises(InvalidInput) as not_a_prediction:
            await asyncio.wait_for(anext(stream), 5)
        assert not_a_prediction.value.code == "schema"
        assert (await asyncio.wait_for(anext(stream), 5)).model_version == "m"


async def test_decodes_by_content_type_before_sniffing(nats_url, nc):
    # A msgpack payload whose first byte is "{" (the integer 123) is read as msgpack when the header says so
    async with connect(nats_url) as ml, ml.predictions(on_bad_message="skip") as stream:
        await nc.publish(subjects.PREDICTION, msgpack.packb(123), headers={"Content-Type": "application/msgpack"})
        good = {"ts": 2, "symbol": "X", "score": 0.5, "signal": "hold", "confidence": 0.0, "modelVersion": "m",
                "features": {}, "latencyMs": 0.1}  # fmt: skip
        await nc.publish(subjects.PREDICTION, msgpack.packb(good), headers={"Content-Type": "application/msgpack"})
        # Then the first is skipped (not a Prediction, but decoded as msgpack without error) and the second arrives
        assert (await asyncio.wait_for(anext(stream), 5)).ts == 2


async def test_wraps_a_connection_of_yours_and_leaves_it_open(nc):
    ml = SparkMlClient(nc, encoding="json")
    async with ml:
        pass
    assert nc.is_connected
    with pytest.raises(ValueError):
        SparkMlClient(nc, encoding="xml")  # type: ignore[arg-type]


async def test_stored_publish_in_jetstream_mode(nats_url, worker_factory, uid):
    async with connect(nats_url) as ml:
        # Before any stream exists: the client says so instead of losing the snapshot silently
        with pytest.raises(Unavailable) as none:
            await ml.publish({**SEED, "symbol": f"J{uid}"}, stored=True)
        assert none.value.code == "no_stream"
        # Given a jetstream-mode worker (it creates MARKET_SNAPSHOTS)
        await worker_factory(mode="jetstream")
        sym = f"K{uid}"
        async with ml.predictions() as stream:
            # When snapshots are published and stored
            seqs: list[int] = []
            for s in snaps(sym, 5):
                seq = await ml.publish(s, stored=True)
                assert isinstance(seq, int)
                seqs.append(seq)
            assert await ml.publish_many(snaps(sym, 8, start=5), stored=True) == 3
            got = await take(stream, 8)
    # Then each got its stream sequence, in order, and each was predicted
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [p.ts for p in got] == [s.ts for s in snaps(sym, 8)]

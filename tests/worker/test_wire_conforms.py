"""What a real worker puts on the wire conforms to the AsyncAPI document (``spark-ml asyncapi``): payloads and
headers (``Content-Type`` on every one) of predictions (msgpack and JSON), dead letters, predict replies and errors,
model info and quality, live PnL and the analytics API's replies."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from spark_ml.core import subjects
from spark_ml.core.specs.asyncapi import asyncapi_document
from spark_ml.worker.services.analytics import AnalyticsService
from tests.support.lifecycle import started
from tests.support.messages import SEED, decode_any
from tests.support.specs import SpecSchemas

MESSAGES = "#/components/messages/"


@pytest.fixture(scope="module")
def spec() -> SpecSchemas:
    return SpecSchemas(asyncapi_document(version="0", partitions=16, servers=["nats://127.0.0.1:4222"]))


def conforms(spec: SpecSchemas, message: str, msg: Msg, payload: Any | None = None) -> None:
    """``msg``'s headers and (decoded) payload are valid under the document's message ``message``."""
    spec.validate(f"{MESSAGES}{message}/headers", dict(msg.headers or {}))
    spec.validate(f"{MESSAGES}{message}/payload", decode_any(msg.data) if payload is None else payload)


async def test_the_stream_and_analytics(nc: Client, worker_factory, collect, spec: SpecSchemas, uid: str) -> None:
    # Given a worker and live analytics on one server, and subscribers on every output subject
    await worker_factory()
    async with started() as group:
        await group.start(AnalyticsService(nc, min_gap_s=0.0, interval_s=60))
        preds, dead, pnl = (
            await collect(subjects.PREDICTION),
            await collect(subjects.DLQ),
            await collect("analytics.pnl.>"),
        )
        sym = f"W{uid}.B"  # a dot: the subject token is escaped
        # When snapshots come in msgpack and in JSON, and one is refused
        for i in range(40):
            body = {**SEED, "ts": SEED["ts"] + i, "mid": 100.0 + i % 3, "symbol": sym}
            if i % 2:
                await nc.publish(subjects.snapshot_for(sym), json.dumps(body).encode())
            else:
                await nc.publish(subjects.snapshot_for(sym), msgpack.packb(body))
        await nc.publish(subjects.snapshot_for(sym), msgpack.packb({"ts": "soon", "mid": 1.0}))
        await preds.wait(40)
        await dead.wait(1)
        await pnl.wait(5)
        # And the analytics API is asked for the symbol, the portfolio, an export and an unknown symbol
        figures = await nc.request(subjects.ANALYTICS_GET, json.dumps({"symbol": sym}).encode(), timeout=5)
        portfolio = await nc.request(subjects.ANALYTICS_GET, b"", timeout=5)
        export = await nc.request(subjects.ANALYTICS_EXPORT, msgpack.packb({"symbol": sym}), timeout=5)
        unknown = await nc.request(subjects.ANALYTICS_GET, json.dumps({"symbol": "NOPE" + uid}).encode(), timeout=5)
    # Then every message is valid under its message of the document
    for msg in preds.msgs:
        conforms(spec, "Prediction", msg)
    assert {m.data[:1] == b"{" for m in preds.msgs} == {True, False}
    conforms(spec, "DeadLetter", dead.msgs[0], payload=dead.msgs[0].data)
    assert dead.msgs[0].headers and dead.msgs[0].headers[subjects.H_ERROR] == "schema"
    for msg in pnl.msgs:
        conforms(spec, "PnlUpdate", msg)
        assert msg.subject == subjects.analytics_pnl(sym)
    for reply in (figures, portfolio, export):
        assert not (reply.headers or {}).get("Nats-Service-Error-Code"), reply.data
    assert json.loads(figures.data)["symbol"] == sym
    conforms(spec, "AnalyticsFigures", figures)
    conforms(spec, "AnalyticsFigures", portfolio)
    conforms(spec, "AnalyticsExport", export)
    assert export.headers and export.headers["Content-Type"] == "application/msgpack"
    conforms(spec, "ErrorReply", unknown)
    assert unknown.headers and unknown.headers["Nats-Service-Error-Code"] == "404"
    for name in ("AnalyticsQuery",):
        for example in spec.document["components"]["messages"][name]["examples"]:
            spec.validate(f"{MESSAGES}{name}/payload", example["payload"])


async def test_request_reply(nc: Client, worker_factory, spec: SpecSchemas, uid: str) -> None:
    # Given a worker serving ml.predict
    await worker_factory(serve_predict=True)
    sym = f"R{uid}"
    # When it is asked in both encodings, refused, and asked for its model
    ok = await nc.request(subjects.PREDICT, msgpack.packb({"snapshot": {**SEED, "symbol": sym}}), timeout=5)
    as_json = await nc.request(
        subjects.PREDICT,
        json.dumps({"snapshot": {**SEED, "symbol": sym}}).encode(),
        timeout=5,
        headers={"Content-Type": "application/json"},
    )
    refused = await nc.request(subjects.PREDICT, json.dumps({"snapshot": {"mid": 1}}).encode(), timeout=5)
    unknown = await nc.request(subjects.PREDICT, msgpack.packb({"snapshot": SEED, "model": "v404"}), timeout=5)
    info = await nc.request(subjects.MODEL_INFO, b"", timeout=5)
    # Then each reply is valid under the document's reply messages
    conforms(spec, "PredictReply", ok)
    conforms(spec, "PredictReply", as_json)
    assert as_json.data[:1] == b"{"
    for error in (refused, unknown):
        conforms(spec, "ErrorReply", error)
    assert refused.headers and refused.headers["Nats-Service-Error-Code"] == "400"
    conforms(spec, "ModelInfo", info)
    # And the request messages the document shows are what the worker accepts
    for example in spec.document["components"]["messages"]["PredictRequest"]["examples"]:
        reply = await nc.request(subjects.PREDICT, msgpack.packb(example["payload"]), timeout=5)
        assert not (reply.headers or {}).get("Nats-Service-Error-Code"), reply.data


async def test_model_quality(nc: Client, worker_factory, spec: SpecSchemas) -> None:
    # Given a worker, When ml.model.quality is asked with and without the windows, and with a bad body
    await worker_factory(serve_predict=True)
    for body in (b"", b'{"windows": true}'):
        spec.validate(f"{MESSAGES}ModelQualityRequest/payload", json.loads(body or b"{}"))
        reply = await nc.request(subjects.MODEL_QUALITY, body, timeout=5)
        # Then each reply is valid under the document
        conforms(spec, "ModelQuality", reply)
    bad = await nc.request(subjects.MODEL_QUALITY, b"[1]", timeout=5)
    conforms(spec, "BodyErrorReply", bad)
    assert json.loads(bad.data)["error"]["code"] == "bad_request"

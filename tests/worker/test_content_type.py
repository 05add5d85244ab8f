"""Every message a worker publishes says its encoding in ``Content-Type``, for each ``SPARK_ML_OUTPUT_ENCODING``.

A real worker (partitioned core intake, ``ml.predict``, a shadow model) and the analytics service on a real
nats-server; the subscribers decode each message by its header only, as FastStream does, and the payload must
decode that way and only that way.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from spark_ml.core import subjects
from spark_ml.core.models import BaselineModel
from spark_ml.core.partition import predict_part
from spark_ml.worker.services.analytics import AnalyticsService, analytics_encoding
from tests.support.jetstream import add_predictions_stream, read_predictions
from tests.support.lifecycle import until

MSGPACK, JSON, OCTETS = "application/msgpack", "application/json", "application/octet-stream"


def by_header(msg: Msg) -> Any:
    """Decode as the header says; the payload must not also read as the other encoding."""
    ct = (msg.headers or {}).get("Content-Type")
    if ct == JSON:
        with pytest.raises(ValueError):  # msgpack reads "{" as one integer, then finds extra data
            msgpack.unpackb(msg.data, raw=False)
        return json.loads(msg.data)
    assert ct == MSGPACK, f"{msg.subject}: Content-Type {ct!r}"
    assert msg.data[:1] != b"{"
    return msgpack.unpackb(msg.data, raw=False)


def _snap(ts: int, symbol: str) -> dict[str, Any]:
    return {"ts": ts, "mid": 100.0 + ts % 5, "symbol": symbol}


@pytest.mark.parametrize("setting", ["auto", "msgpack", "json"])
async def test_every_published_subject_carries_its_content_type(
    nc: Client, worker_factory, settings_factory, collect, uid: str, setting: str
) -> None:
    # Given a worker with a shadow model, the analytics service, and subscribers on every output subject
    app = await worker_factory(serve_predict=True, output_encoding=setting)
    app.shadow.model = BaselineModel()
    svc = AnalyticsService(nc, min_gap_s=0.0, encoding=analytics_encoding(settings_factory(output_encoding=setting)))
    await svc.start()
    try:
        preds = await collect(subjects.PREDICTION)
        shadow = await collect(subjects.PREDICTION_SHADOW)
        dlq = await collect(subjects.DLQ)
        pnl = await collect(f"{subjects.ANALYTICS_PNL_PREFIX}.>")
        mp, js, hdr = f"MP{uid}", f"JS{uid}", f"HD{uid}"
        forwarded = await collect(f"market.snapshot.part.*.FW{uid}")
        # When snapshots come in msgpack, in JSON (detected), in JSON said by a header (leading space: only the
        # header says it), and refused ones of both kinds
        for i in range(1, 4):
            await nc.publish(subjects.snapshot_for(mp), msgpack.packb(_snap(i, mp)))
            await nc.publish(subjects.snapshot_for(js), json.dumps(_snap(i, js)).encode())
            await nc.publish(
                subjects.snapshot_for(hdr), b" " + json.dumps(_snap(i, hdr)).encode(), headers={"Content-Type": JSON}
            )
        await nc.publish(subjects.snapshot_for(mp), b"\xc1 not msgpack")
        await nc.publish(subjects.snapshot_for(js), json.dumps({"ts": "soon", "mid": 1.0}).encode())
        await nc.publish(subjects.SNAPSHOT, msgpack.packb(_snap(1, f"FW{uid}")))  # bare: forwarded by a worker
        await nc.flush()
        await preds.wait(10)  # 9 above and the forwarded one
        await dlq.wait(2)
        await until(lambda: len(shadow.msgs) >= 10, 10, "shadow predictions")
        await until(lambda: {m.subject.rsplit(".", 1)[-1] for m in pnl.msgs} >= {mp, js, hdr}, 10, "analytics")
        await forwarded.wait(1)

        # Then each prediction and shadow prediction decodes by its header, in the chosen encoding
        came_in = {mp: MSGPACK, js: JSON, hdr: JSON, f"FW{uid}": MSGPACK}
        for sub in (preds, shadow):
            for msg in sub.msgs:
                body = by_header(msg)
                want = came_in[body["symbol"]] if setting == "auto" else {"msgpack": MSGPACK, "json": JSON}[setting]
                assert msg.headers is not None and msg.headers["Content-Type"] == want, (msg.subject, body)
        # Dead letters: the payload unchanged; octet-stream when it could not be read, else what it was read as
        reasons = {m.headers["Spark-Ml-Error"]: m.headers for m in dlq.msgs if m.headers}
        assert reasons["decode"]["Content-Type"] == OCTETS
        assert reasons["schema"]["Content-Type"] == JSON
        # Analytics: msgpack unless json was chosen
        for msg in pnl.msgs:
            by_header(msg)
            assert (msg.headers or {}).get("Content-Type") == (JSON if setting == "json" else MSGPACK)
        # The forwarded bare snapshot gained the Content-Type it was read as
        assert (forwarded.msgs[0].headers or {}).get("Content-Type") == MSGPACK
        # ml.predict answers in the request's encoding whatever the setting, and says so
        request = {"snapshot": _snap(10, mp)}
        reply = await nc.request(subjects.PREDICT, json.dumps(request).encode(), timeout=5)
        assert by_header(reply)["symbol"] == mp and (reply.headers or {}).get("Content-Type") == JSON
        reply = await nc.request(subjects.PREDICT, msgpack.packb(request), timeout=5)
        assert by_header(reply)["symbol"] == mp and (reply.headers or {}).get("Content-Type") == MSGPACK
        # ml.model.quality (JSON) and analytics.get (the request's encoding) say theirs too
        reply = await nc.request(subjects.MODEL_QUALITY, b"", timeout=5)
        assert "versions" in by_header(reply)
        reply = await nc.request(subjects.ANALYTICS_GET, msgpack.packb({"symbol": mp}), timeout=5)
        assert isinstance(by_header(reply), dict)
        reply = await nc.request(predict_part(0), b"{", timeout=5)
        assert by_header(reply)["error"]["code"] == "decode" and (reply.headers or {}).get("Content-Type") == JSON
    finally:
        await svc.stop()


@pytest.mark.parametrize("setting", ["auto", "json"])
async def test_predictions_stored_through_pubacks_carry_content_type_and_msg_id(
    nc: Client, worker_factory, uid: str, setting: str
) -> None:
    # Given a stream over ml.prediction: a jetstream worker publishes through it (reply subjects, PubAcks)
    js = nc.jetstream()
    await add_predictions_stream(js)
    app = await worker_factory(mode="jetstream", output_encoding=setting)
    mp, js_sym = f"MP{uid}", f"JS{uid}"
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    # When msgpack and JSON snapshots (one with a traceparent) are stored in MARKET_SNAPSHOTS
    for i in range(1, 6):
        await js.publish(subjects.snapshot_for(mp), msgpack.packb(_snap(i, mp)))
        headers = {"traceparent": trace} if i == 3 else None
        await js.publish(subjects.snapshot_for(js_sym), json.dumps(_snap(i, js_sym)).encode(), headers=headers)
    await until(lambda: app.intake is not None and getattr(app.intake, "acked", None) is not None, 10, "PubAcks on")
    await until(lambda: app.processor is not None and app.processor.published >= 10, 20, "10 predictions")
    stored = await read_predictions(js)
    # Then every stored prediction says its encoding, keeps its Nats-Msg-Id, and the traced one its trace
    assert len(stored) == 10
    for data, headers in stored:
        h = headers or {}
        body = json.loads(data) if h.get("Content-Type") == JSON else msgpack.unpackb(data, raw=False)
        want = JSON if setting == "json" or body["symbol"] == js_sym else MSGPACK
        assert h.get("Content-Type") == want, h
        assert h.get("Nats-Msg-Id", "").startswith(f"{subjects.JS_STREAM}-"), h
        assert h.get("traceparent") == (trace if body["symbol"] == js_sym and body["ts"] == 3 else None), h

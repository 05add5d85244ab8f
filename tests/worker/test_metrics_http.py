"""The metrics sidecar over HTTP: the six metrics with counts that match what was sent; health and readiness."""

from __future__ import annotations

import aiohttp
import msgpack
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from spark_ml.core import subjects
from tests.support.messages import SEED

SIX = {
    "ml_predict_requests",
    "ml_predict_latency_ms",
    "ml_model_version_info",
    "ml_feature_extractions",
    "ml_prediction_score",
    "ml_model_errors",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_six_metrics_with_matching_counts(nc: Client, worker_factory, collect) -> None:
    # Given a worker
    app = await worker_factory()
    preds = await collect(subjects.PREDICTION)
    dlq = await collect(subjects.DLQ)
    # When 40 good and 3 bad snapshots are published
    for i in range(40):
        await nc.publish(subjects.snapshot_for("M"), msgpack.packb({**SEED, "ts": SEED["ts"] + i}))
    for raw in (b"junk\xc1", msgpack.packb({"ts": 1}), msgpack.packb({"ts": 1, "mid": -1.0})):
        await nc.publish(subjects.SNAPSHOT, raw)
    await preds.wait(40)
    await dlq.wait(3)
    # Then /metrics shows the six names, with exactly those counts
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{app.sidecar.port}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        async with http.get(f"http://127.0.0.1:{app.sidecar.port}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"http://127.0.0.1:{app.sidecar.port}/readyz") as resp:
            assert resp.status == 200 and (await resp.json()) == {"ready": True}
    names = {f.name for f in text_string_to_metric_families(text)}
    assert SIX <= names
    s = samples(text)
    v = (("model_version", "baseline"),)
    assert s[("ml_predict_requests_total", (("model_version", "baseline"), ("status", "ok")))] == 40
    assert s[("ml_predict_requests_total", (("model_version", "baseline"), ("status", "invalid")))] == 3
    assert s[("ml_predict_requests_total", (("model_version", "baseline"), ("status", "error")))] == 0
    assert s[("ml_predict_latency_ms_count", v)] == 40
    assert s[("ml_predict_latency_ms_bucket", (("le", "+Inf"), *v))] == 40
    assert s[("ml_model_version_info", (("version", "baseline"),))] == 1
    assert s[("ml_feature_extractions_total", ())] == 40
    assert s[("ml_prediction_score_count", ())] == 40
    assert s[("ml_model_errors_total", (("error_type", "invalid_input"),))] == 3
    assert s[("ml_snapshots_received_total", ())] == 43
    assert s[("ml_dead_letters_total", (("reason", "decode"),))] == 1
    assert s[("ml_dead_letters_total", (("reason", "schema"),))] == 2
    # latency buckets are explicit milliseconds from 0.1 ms to 1 s
    les = sorted(float(dict(k[1])["le"]) for k in s if k[0] == "ml_predict_latency_ms_bucket")
    assert les[0] == 0.1 and 1000.0 in les


async def test_readyz_is_503_after_stop(worker_factory) -> None:
    app = await worker_factory()
    assert app.ready()
    app._consuming = False
    assert not app.ready()

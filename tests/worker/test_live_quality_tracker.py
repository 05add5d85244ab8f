"""The live-quality observer in-process: engine batches in, ml_live_* out; partitions that move forget their labels;
``ml.model.quality`` answers on a real server, bad requests included."""

from __future__ import annotations

import json
import math
import time

import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.codec import Snapshot
from spark_ml.core.engine import Engine
from spark_ml.core.features import WARMUP, FeatureStore
from spark_ml.core.models import BaselineModel
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.pipeline.live_quality import LiveQualityTracker, decode_window
from tests.support.processes import Scrape


def _tracker(min_rows: int = 10) -> tuple[LiveQualityTracker, Engine, Metrics]:
    metrics = Metrics()
    engine = Engine(BaselineModel(), features=FeatureStore(max_symbols=100))
    tracker = LiveQualityTracker(metrics, engine.features, window=1000, min_rows=min_rows, export_s=0, max_symbols=100)
    tracker.set_models(engine.model.version, None, {engine.model.version: 0.55})
    return tracker, engine, metrics


def _feed(tracker: LiveQualityTracker, engine: Engine, symbol: str, start: int, n: int) -> None:
    snaps = [Snapshot(t, 100.0 + (t * 7919 % 13), symbol) for t in range(start, start + n)]
    for i in range(0, n, 16):
        tracker.observe(engine.run_batch(snaps[i : i + 16]))


def test_batches_become_live_metrics() -> None:
    tracker, engine, metrics = _tracker()
    _feed(tracker, engine, "A", 0, 100)
    tracker.export()
    scrape = Scrape(metrics.render().decode())
    v = engine.model.version
    labelled = 100 - WARMUP - 1
    assert scrape.total("ml_live_labelled_predictions_total", model_version=v, role="active") == labelled
    assert scrape.total("ml_live_window_rows", model_version=v, role="active") == labelled
    assert 0.0 <= scrape.total("ml_live_auc", model_version=v, role="active") <= 1.0
    assert scrape.total("ml_model_offline_auc_lower", model_version=v) == 0.55
    # The counter only grows by what is new
    _feed(tracker, engine, "A", 100, 10)
    tracker.export()
    scrape = Scrape(metrics.render().decode())
    assert scrape.total("ml_live_labelled_predictions_total", model_version=v, role="active") == labelled + 10


def test_figures_wait_for_min_rows_and_leave_with_their_version() -> None:
    tracker, engine, metrics = _tracker(min_rows=500)
    _feed(tracker, engine, "A", 0, 100)
    tracker.export()
    text = metrics.render().decode()
    assert "ml_live_auc{" not in text and "ml_live_window_rows{" in text
    tracker.set_models("other-1", None, {})
    tracker.export()
    text = metrics.render().decode()
    assert engine.model.version not in "".join(line for line in text.splitlines() if line.startswith("ml_live"))
    assert "ml_model_offline_auc_lower{" not in text


def test_a_partition_that_moves_forgets_its_pending_labels() -> None:
    tracker, engine, _ = _tracker()
    _feed(tracker, engine, "A", 0, 50)
    _feed(tracker, engine, "B", 0, 50)
    join = tracker.quality.join
    assert join.pending("A") and join.pending("B")
    # The intake drops a moved partition's symbols (and restores a taken-over one's): their pending labels go.
    engine.features.drop(["A"])
    assert not join.pending("A") and join.pending("B")
    engine.features.restore(engine.features.export(["B"]))
    assert not join.pending("B")
    # A's next prediction after coming back is not labelled by a snapshot another worker saw
    before = tracker.quality.windows[engine.model.version].total
    _feed(tracker, engine, "A", 60, 1)
    assert tracker.quality.windows[engine.model.version].total == before


async def test_model_quality_answers_and_refuses_bad_requests(nc: Client) -> None:
    tracker, engine, _ = _tracker()
    _feed(tracker, engine, "A", 0, 100)
    await nc.subscribe(subjects.MODEL_QUALITY, cb=tracker.on_request)
    reply = json.loads((await nc.request(subjects.MODEL_QUALITY, b"", timeout=2)).data)
    (row,) = reply["versions"]
    assert row["role"] == "active" and row["rows"] == 100 - WARMUP - 1 and "window" not in row
    reply = json.loads((await nc.request(subjects.MODEL_QUALITY, b'{"windows": true}', timeout=2)).data)
    y, s = decode_window(reply["versions"][0]["window"])
    assert y.size == s.size == 100 - WARMUP - 1
    for bad in (b"not json", b"[1, 2]"):
        reply = json.loads((await nc.request(subjects.MODEL_QUALITY, bad, timeout=2)).data)
        assert reply["error"]["code"] == "bad_request", bad


def test_decode_window_refuses_mismatched_arrays() -> None:
    with pytest.raises(ValueError):
        decode_window({"labels": "AAE=", "scores": ""})


@pytest.mark.parametrize("batch", [1, 8, 64, 256])
def test_cost_per_prediction_against_the_engine(batch: int) -> None:
    # The README's cost figures: the observer against the engine's own work on the same batches (16 symbols),
    # best of three, CPU time; printed with -s. A loose relative bound (measured: a quarter of the engine at batch
    # 256, a third at batch 1), so a loaded machine does not fail it.
    metrics = Metrics()
    engine = Engine(BaselineModel(), features=FeatureStore())
    tracker = LiveQualityTracker(metrics, engine.features, window=5000, min_rows=500, export_s=5, max_symbols=10_000)
    tracker.set_models(engine.model.version, None, {})
    n = 25_600
    snaps = [Snapshot(i, 100.0 + (i * 7919 % 97), f"S{i % 16}") for i in range(n)]
    results = [engine.run_batch(snaps[i : i + batch]) for i in range(0, n, batch)]
    replay = Engine(BaselineModel(), features=FeatureStore())
    observe = engine_cost = math.inf
    for _ in range(3):
        t0 = time.process_time()
        for r in results:
            tracker.observe(r)
        t1 = time.process_time()
        for r in results:
            replay.run_batch(r.snaps)
        t2 = time.process_time()
        observe, engine_cost = min(observe, (t1 - t0) / n * 1e9), min(engine_cost, (t2 - t1) / n * 1e9)
    print(f"\nRESULT live quality at batch {batch}: {observe:.0f} ns/prediction, engine {engine_cost:.0f} ns/row")
    assert tracker.quality.windows[engine.model.version].total > 0
    assert observe < (0.5 if batch >= 64 else 1.0) * engine_cost

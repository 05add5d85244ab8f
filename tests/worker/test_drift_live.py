"""A replayed regime change shows in a running worker's ``ml_feature_drift_psi`` within the 10-minute budget.

Real data, real worker, real nats-server: a logistic model is trained on EURUSD bars 35..2999 and
registered with the reference distribution ``spark-ml train`` stores; the worker then receives bars
3000..4199 as they were (the normal period), then bars from 4200 on with log returns x3 plus 5 bp per bar
(the regime change). The gauges are read over HTTP, as Prometheus reads them.

"Within 10 minutes" is counted in snapshots: at the stated production rate of one snapshot per second
reaching a worker, the alert has 600 s from the change to fire, less ``for: 2m``, one scrape interval
(15 s) and one rule evaluation interval (15 s): the gauge must cross its critical level within 450
snapshots of the change. The levels and the window are the shipped ones (``core/drift.toml``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import msgpack
import numpy as np
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from spark_ml.core import subjects
from spark_ml.core.codec import Snapshot
from spark_ml.core.features import FEATURE_NAMES, WARMUP, series_features
from spark_ml.core.io.registry import Registry
from spark_ml.core.ml.dataset import next_up_labels
from spark_ml.core.ml.drift import DriftMonitor, load_thresholds, stressed_closes, window_psi
from spark_ml.core.ml.sources import load
from spark_ml.core.ml.training import reference_distribution
from spark_ml.core.models import fit_model

RATE_PER_S = 1.0
"""Stated production rate: snapshots per second reaching one worker (all its symbols together)."""
BUDGET_S, ALERT_FOR_S, SCRAPE_S, EVAL_S = 600, 120, 15, 15
BUDGET_SNAPSHOTS = int((BUDGET_S - ALERT_FOR_S - SCRAPE_S - EVAL_S) * RATE_PER_S)
SPLIT, CHANGE, CHUNK = 3000, 4200, 20
AFFECTED = ("vol_20", "bb_width")
SYMBOL = "EURUSD"


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _until_seen(monitor: DriftMonitor, rows: int) -> None:
    """Wait until the worker's drift window has taken ``rows`` rows in (a scrape then reflects them)."""
    await _until(lambda: monitor.seen >= rows)


async def _publish(nc: Client, snaps: list[Snapshot], closes: np.ndarray, start: int, end: int) -> None:
    for i in range(start, end):
        s = snaps[i]
        await nc.publish(
            subjects.snapshot_for(SYMBOL), msgpack.packb({"ts": s.ts, "mid": float(closes[i]), "vol1m": s.vol1m})
        )
    await nc.flush()


async def _scrape(http: aiohttp.ClientSession, port: int) -> dict[str, dict[tuple[str, ...], float]]:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        body = await resp.text()
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            key = tuple(sample.labels[k] for k in sorted(sample.labels))
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def _psi(scraped: dict[str, dict[tuple[str, ...], float]]) -> dict[str, float]:
    return {key[0]: value for key, value in scraped.get("ml_feature_drift_psi", {}).items()}


async def test_regime_change_crosses_critical_within_budget(
    nc: Client, worker_factory, collect, tmp_path: Path
) -> None:
    # Given a model trained on the first 3000 bars, with the reference `spark-ml train` stores
    ds = load("eurusd")
    levels = load_thresholds()
    window = levels.window
    x, y = ds.features[WARMUP:SPLIT], next_up_labels(ds.close)[WARMUP:SPLIT]
    reference = reference_distribution(x, FEATURE_NAMES)
    reg = Registry(tmp_path / "reg")
    model = fit_model("logistic", x, y, feature_names=FEATURE_NAMES, seed=0)
    version = reg.register(model, data="eurusd", metrics={}, reference=reference).version
    closes = stressed_closes(ds.close, CHANGE, vol_factor=3.0, trend_bp=5.0)
    snaps = list(ds.snapshots)
    app = await worker_factory(registry=tmp_path / "reg")
    assert app.sidecar is not None
    preds = await collect(subjects.PREDICTION)
    # The symbol warms up under the baseline (no reference, no drift window), so the window holds warm
    # feature rows only, as the calibration's do; then the model is promoted.
    await _publish(nc, snaps, closes, SPLIT - WARMUP, SPLIT)
    await preds.wait(WARMUP)
    reg.promote(version)
    await _until(lambda: app.engine.model.version == version and app.drift.monitor is not None)
    monitor = app.drift.monitor
    assert monitor is not None and monitor.window == window
    async with aiohttp.ClientSession() as http:
        scraped = await _scrape(http, app.sidecar.port)
        exported = scraped.get("ml_feature_drift_threshold", {})
        critical = {f: exported[(f, "critical")] for f in FEATURE_NAMES}
        assert critical == {f: levels.levels(f)["critical"] for f in FEATURE_NAMES}

        # When the normal period streams in, Then no affected feature reaches critical once the window is full
        normal_full: list[dict[str, float]] = []
        for start in range(SPLIT, CHANGE, CHUNK):
            end = min(start + CHUNK, CHANGE)
            await _publish(nc, snaps, closes, start, end)
            await _until_seen(monitor, end - SPLIT)
            if end - SPLIT >= window:
                normal_full.append(_psi(await _scrape(http, app.sidecar.port)))
        assert len(normal_full) >= (CHANGE - SPLIT - window) // CHUNK
        for f in AFFECTED:
            assert max(p[f] for p in normal_full) < critical[f], f

        # and the gauge is exactly the PSI the calibration computes for the same rows
        live_rows = series_features(snaps[SPLIT - WARMUP : CHANGE])[WARMUP:]
        offline = window_psi(reference, live_rows[-window:], FEATURE_NAMES, window)
        assert normal_full[-1] == pytest.approx({f: float(offline[f][0]) for f in FEATURE_NAMES}, rel=1e-12, abs=1e-15)

        # When the regime changes, Then each affected feature crosses critical within the budget
        crossed: dict[str, tuple[int, float]] = {}
        t0 = time.monotonic()
        for start in range(CHANGE, CHANGE + BUDGET_SNAPSHOTS, CHUNK):
            end = start + CHUNK
            await _publish(nc, snaps, closes, start, end)
            await _until_seen(monitor, end - SPLIT)
            psi = _psi(await _scrape(http, app.sidecar.port))
            for f in AFFECTED:
                if f not in crossed and psi[f] >= critical[f]:
                    crossed[f] = (end - CHANGE, time.monotonic() - t0)
            if len(crossed) == len(AFFECTED):
                break
    report = {
        f: f"{n} snapshots (= {n / RATE_PER_S:.0f} s at 1/s), {s:.2f} s wall clock" for f, (n, s) in crossed.items()
    }
    normal_max = {f: round(max(p[f] for p in normal_full), 3) for f in AFFECTED}
    print(f"\nnormal period max {normal_max}; critical crossed after the change: {report}; budget {BUDGET_SNAPSHOTS}")
    assert set(crossed) == set(AFFECTED), f"not crossed within {BUDGET_SNAPSHOTS} snapshots: {report}"
    assert all(n <= BUDGET_SNAPSHOTS for n, _ in crossed.values())

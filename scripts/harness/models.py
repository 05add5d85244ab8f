"""Trained models for the benchmark: the tree models the ``worker-tree`` (LightGBM) and ``worker-xgb`` (XGBoost)
scenarios serve, and the amortized cost of one model call per row, measured in-process at batch sizes 1 and
256 on real feature rows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.io.registry import Registry
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.drift import reference_from
from spark_ml.core.ml.sources import load
from spark_ml.core.models import BaselineModel, Model, fit_model

__all__ = ["model_costs", "train_tree_registry"]

_TRAIN_ROWS = 4000


def _bed() -> tuple[Dataset, NDArray[np.float64], NDArray[np.int64]]:
    ds = load("synthetic")
    x, y = ds.xy()
    return ds, x[:_TRAIN_ROWS], y[:_TRAIN_ROWS]


def train_tree_registry(registry: Path, kind: str = "lgbm") -> str:
    """Fit a gradient-boosted tree model of ``kind`` on the synthetic bed, register it with its drift reference
    and make it active; returns its version."""
    ds, x, y = _bed()
    model = fit_model(kind, x, y, feature_names=ds.feature_names, seed=0)
    reg = Registry(registry)
    manifest = reg.register(model, data="synthetic", metrics={}, reference=reference_from(x, ds.feature_names))
    reg.promote(manifest.version)
    return manifest.version


def _per_row_us(model: Model, x: NDArray[np.float64], batch: int, budget_s: float) -> float:
    rows = x[: max(batch, 1)]
    calls = 0
    t0 = time.perf_counter()
    while True:
        model.predict_proba(rows)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= budget_s and calls >= 20:
            return elapsed / (calls * len(rows)) * 1e6


def model_costs(*, quick: bool) -> dict[str, Any]:
    """Microseconds per row of one ``predict_proba`` call at batch 1 and 256, for each model kind."""
    ds, x, y = _bed()
    names = ds.feature_names
    models: dict[str, Model] = {
        "baseline": BaselineModel(),
        "logistic": fit_model("logistic", x, y, feature_names=names, seed=0),
        "lgbm": fit_model("lgbm", x, y, feature_names=names, seed=0),
        "xgb": fit_model("xgb", x, y, feature_names=names, seed=0),
    }
    budget = 0.2 if quick else 1.0
    out: dict[str, Any] = {}
    for kind, model in models.items():
        cols = [names.index(n) for n in model.feature_names]
        xm = np.ascontiguousarray(x[:, cols])
        out[kind] = {str(b): _per_row_us(model, xm, b, budget) for b in (1, 256)}
    return out

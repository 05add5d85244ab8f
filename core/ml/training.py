"""Fit a model kind on a dataset with walk-forward evaluation: the report behind ``spark-ml train`` and ``eval``.

A :class:`Recipe` says how a kind is fitted; :func:`walk_forward_eval` refits it on each fold's training
rows and scores the fold's test rows; the baseline is scored on the same test rows. :func:`train` adds the
final model (fitted on every row), feature importance (gain from the final model, permutation on the
out-of-sample folds) and the reference feature distribution stored in the manifest for drift detection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.io.registry import Manifest, Registry
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.evaluate import Fold, Slo, auc, check_slo, choose_folds, metrics, summarize, walk_forward
from spark_ml.core.models import BaselineModel, Model, TrainedModel, fit_model

__all__ = [
    "REFERENCE_BINS",
    "FoldResult",
    "Progress",
    "Recipe",
    "TrainReport",
    "WalkForward",
    "bin_fractions",
    "fold_importance",
    "gate",
    "jsonable",
    "permutation_importance",
    "reference_distribution",
    "train",
    "walk_forward_eval",
]

Progress = Callable[[str], None]
"""Called once per finished step (a fold, the final fit, importance) with a short label."""
REFERENCE_BINS = 10


@dataclass(frozen=True, slots=True)
class Recipe:
    """How a model kind is fitted and evaluated walk-forward: what ``train`` records and ``eval`` and ``backtest``
    refit on each fold.

    Args:
        kind: model kind (``baseline`` fits nothing).
        seed: seed of every fit.
        folds: walk-forward folds (None: as many as the data allows, up to five).
        gap: rows left out before each test block (None: the default gap).
        params: model parameters over the kind's defaults.
    """

    kind: str
    seed: int = 0
    folds: int | None = None
    gap: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of_version(cls, manifest: Manifest, data: str, *, seed: int | None = None) -> Recipe:
        """A registered version's recipe; its folds and gap only when ``data`` is the data it was trained on."""
        extra = manifest.extra
        same_data = data == manifest.data
        return cls(
            manifest.kind,
            int(extra.get("seed", 0)) if seed is None else seed,
            int(extra["folds"]) if same_data and "folds" in extra else None,
            int(extra["gap"]) if same_data and "gap" in extra else None,
            dict(extra.get("params") or {}),
        )


def _columns(model: Model) -> list[int]:
    return [FEATURE_NAMES.index(n) for n in model.feature_names]


@dataclass(slots=True)
class FoldResult:
    """One fold: its split, the test rows' labels and scores, and the metrics of model and baseline."""

    fold: Fold
    rows: NDArray[np.int64]
    """Dataset row indices of the test block (into ``Dataset.snapshots``)."""
    y: NDArray[np.int64]
    scores: NDArray[np.float64]
    baseline_scores: NDArray[np.float64]
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    model: Model
    fit_seconds: float
    bayes_auc: float | None = None
    oracle_auc: float | None = None
    """AUC of the true probability on the realized labels (synthetic only): the same-sample ceiling."""


@dataclass(slots=True)
class WalkForward:
    """Walk-forward results of one model kind on one dataset."""

    data: str
    kind: str
    seed: int
    params: dict[str, Any]
    folds: list[FoldResult]
    metrics: dict[str, float] = field(default_factory=dict)
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    baseline_spread: dict[str, dict[str, float]] = field(default_factory=dict)
    bayes_auc: float | None = None
    oracle_auc: float | None = None

    def oos(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        """Out-of-sample rows, labels, model scores and baseline scores of all folds, in time order."""
        return (
            np.concatenate([f.rows for f in self.folds]),
            np.concatenate([f.y for f in self.folds]),
            np.concatenate([f.scores for f in self.folds]),
            np.concatenate([f.baseline_scores for f in self.folds]),
        )


def _fit(kind: str, x: NDArray[np.float64], y: NDArray[np.int64], seed: int, params: Mapping[str, Any]) -> Model:
    if kind == "baseline":
        return BaselineModel()
    return fit_model(kind, x, y, feature_names=FEATURE_NAMES, seed=seed, params=params)


def walk_forward_eval(ds: Dataset, recipe: Recipe, *, progress: Progress | None = None) -> WalkForward:
    """Refit the recipe's kind on each fold's past and score its test block; the baseline is scored alongside.

    The kind may also be ``baseline`` (nothing is fitted). ``folds=None`` takes as many as the data allows,
    up to :data:`~spark_ml.core.ml.evaluate.MAX_FOLDS`. ValueError when the data is too short to split.
    """
    kind, seed, gap, params = recipe.kind, recipe.seed, recipe.gap, dict(recipe.params)
    folds = recipe.folds
    x_all, y_all = ds.xy()
    rows_all = ds.rows()
    p_up = ds.extra.get("p_up")
    baseline = BaselineModel()
    base_cols = _columns(baseline)
    out = WalkForward(ds.name, kind, seed, params, [])
    splits = walk_forward(len(y_all), folds=folds or choose_folds(len(y_all), gap=gap), gap=gap)
    for fold in splits:
        t0 = time.perf_counter()
        model = _fit(kind, x_all[fold.train], y_all[fold.train], seed, params)
        fit_seconds = time.perf_counter() - t0
        x, y = x_all[fold.test], y_all[fold.test]
        scores = model.predict_proba(x[:, _columns(model)])
        base = baseline.predict_proba(x[:, base_cols])
        result = FoldResult(
            fold, rows_all[fold.test], y, scores, base, metrics(y, scores), metrics(y, base), model, fit_seconds
        )
        if p_up is not None:
            from spark_ml.core.ml.synthetic import bayes_auc

            truth = p_up[result.rows]
            result.bayes_auc, result.oracle_auc = bayes_auc(truth), auc(y, truth)
        out.folds.append(result)
        if progress:
            progress(f"fold {fold.index + 1}/{len(splits)}")
    out.metrics, out.spread = summarize([f.metrics for f in out.folds])
    out.baseline_metrics, out.baseline_spread = summarize([f.baseline_metrics for f in out.folds])
    if p_up is not None:
        out.bayes_auc = float(np.mean([f.bayes_auc for f in out.folds]))
        out.oracle_auc = float(np.mean([f.oracle_auc for f in out.folds]))
    return out


def permutation_importance(ds: Dataset, wf: WalkForward, *, seed: int = 0) -> dict[str, float]:
    """Mean drop of out-of-sample AUC over the folds when one feature's test column is shuffled."""
    rng = np.random.default_rng(seed)
    x_all = ds.features
    drops: dict[str, list[float]] = {}
    for f in wf.folds:
        cols = _columns(f.model)
        x = x_all[f.rows][:, cols]
        base = auc(f.y, f.scores)
        for j, name in enumerate(f.model.feature_names):
            shuffled = x.copy()
            shuffled[:, j] = rng.permutation(shuffled[:, j])
            drops.setdefault(name, []).append(base - auc(f.y, f.model.predict_proba(shuffled)))
    return {name: float(np.nanmean(v)) for name, v in drops.items()}


def reference_distribution(
    x: NDArray[np.float64], names: tuple[str, ...] | list[str], bins: int = REFERENCE_BINS
) -> dict[str, dict[str, list[float]]]:
    """Per feature: the deciles of the training values as bin edges and the share of rows in each bin.

    Edges that coincide (a feature with few distinct values) are merged, so a feature may have fewer
    bins; :func:`bin_fractions` counts live values with the same convention, for the PSI.
    """
    out = {}
    for j, name in enumerate(names):
        edges = np.unique(np.quantile(x[:, j], np.linspace(0.0, 1.0, bins + 1)))
        out[name] = {"edges": edges.tolist(), "fractions": bin_fractions(x[:, j], edges).tolist()}
    return out


def bin_fractions(values: NDArray[np.float64], edges: NDArray[np.float64] | list[float]) -> NDArray[np.float64]:
    """Share of ``values`` in each bin ``(e[i], e[i+1]]`` (first bin closed); outer bins take what lies beyond.

    With one distinct edge (a constant feature) there is a single bin holding everything.
    """
    e = np.asarray(edges, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    n_bins = max(1, e.size - 1)
    if v.size == 0:
        return np.zeros(n_bins)
    idx = np.clip(np.searchsorted(e[1:-1], v, side="left"), 0, n_bins - 1) if e.size > 2 else np.zeros(v.size, int)
    counts: NDArray[np.float64] = np.bincount(idx, minlength=n_bins).astype(np.float64)
    return counts / v.size


def jsonable(obj: Any) -> Any:
    """Plain JSON data: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass(slots=True)
class TrainReport:
    """Everything ``spark-ml train`` learned: walk-forward evaluation, final model, importance, reference."""

    dataset: Dataset
    evaluation: WalkForward
    model: TrainedModel
    importance: dict[str, dict[str, float]]
    reference: dict[str, dict[str, list[float]]]
    train_seconds: float

    def register(self, registry: Registry) -> Manifest:
        """Store the final model in ``registry`` with its metrics, reference distribution and recipe."""
        return registry.register(
            self.model,
            data=self.dataset.name,
            metrics=self.evaluation.metrics,
            reference=self.reference,
            extra=self.manifest_extra(),
        )

    def manifest_extra(self) -> dict[str, Any]:
        """What the registry keeps beside the metrics, enough to re-run the evaluation (``spark-ml eval``)."""
        ev = self.evaluation
        out: dict[str, Any] = jsonable(
            {
                "seed": ev.seed,
                "params": ev.params,
                "folds": len(ev.folds),
                "gap": ev.folds[0].fold.gap,
                "n_rows": int(self.dataset.rows().size),
                "spread": ev.spread,
                "baseline_metrics": ev.baseline_metrics,
                "bayes_auc": ev.bayes_auc,
                "train_seconds": self.train_seconds,
            }
        )
        return out

    def to_json(self, version: str | None = None) -> dict[str, Any]:
        """The report as plain JSON data (the object ``spark-ml train --json`` prints)."""
        ev = self.evaluation
        ts = self.dataset.ts
        folds = []
        for f in ev.folds:
            folds.append(
                {
                    **f.fold.as_dict(),
                    "n_train": f.fold.train_end - f.fold.train_start,
                    "n_test": int(f.rows.size),
                    "test_period": {"start_ms": int(ts[f.rows[0]]), "end_ms": int(ts[f.rows[-1]])},
                    "metrics": f.metrics,
                    "baseline_metrics": f.baseline_metrics,
                    "bayes_auc": f.bayes_auc,
                    "oracle_auc": f.oracle_auc,
                    "fit_seconds": f.fit_seconds,
                }
            )
        doc: dict[str, Any] = {
            "version": version or self.model.version,
            "data": ev.data,
            "symbol": self.dataset.symbol,
            "kind": ev.kind,
            "seed": ev.seed,
            "params": ev.params,
            "metrics": ev.metrics,
            "spread": ev.spread,
            "baseline_metrics": ev.baseline_metrics,
            "train_seconds": self.train_seconds,
            "n_rows": int(self.dataset.rows().size),
            "folds": folds,
            "importance": self.importance,
        }
        if ev.bayes_auc is not None:
            doc["bayes_auc"] = ev.bayes_auc
            doc["oracle_auc"] = ev.oracle_auc
        out: dict[str, Any] = jsonable(doc)
        return out


def train(ds: Dataset, recipe: Recipe, *, progress: Progress | None = None) -> TrainReport:
    """Walk-forward evaluation, then the final model on every row, importance and the reference distribution."""
    t0 = time.perf_counter()
    ev = walk_forward_eval(ds, recipe, progress=progress)
    x, y = ds.xy()
    model = fit_model(recipe.kind, x, y, feature_names=FEATURE_NAMES, seed=recipe.seed, params=recipe.params)
    if progress:
        progress("final model")
    importance = {"gain": model.importance(), "permutation": permutation_importance(ds, ev, seed=recipe.seed)}
    if progress:
        progress("importance")
    reference = reference_distribution(x, FEATURE_NAMES)
    return TrainReport(ds, ev, model, importance, reference, time.perf_counter() - t0)


def gate(
    ds: Dataset,
    manifest: Manifest,
    slo: Slo,
    *,
    seed: int | None = None,
    progress: Progress | None = None,
    importance: bool = False,
) -> dict[str, Any]:
    """The evaluation gate of a registered version on a dataset, as the JSON document ``spark-ml eval`` writes.

    The version's recipe (kind, parameters, seed, number of folds) is refitted walk-forward on ``ds`` and
    checked against ``slo`` and against the baseline on the same folds: out-of-sample figures even when
    ``ds`` is the data the stored model was trained on (the stored model itself saw all of it). With
    ``importance``, the document also holds the fold models' importance (:func:`fold_importance`).
    """
    recipe = Recipe.of_version(manifest, ds.name, seed=seed)
    wf = walk_forward_eval(ds, recipe, progress=progress)
    checks = check_slo(wf.metrics, wf.baseline_metrics, slo, wf.spread)
    doc: dict[str, Any] = {
        "passed": all(c["passed"] for c in checks),
        "version": manifest.version,
        "kind": manifest.kind,
        "data": ds.name,
        "trained_on": manifest.data,
        "seed": recipe.seed,
        "folds": len(wf.folds),
        "gap": wf.folds[0].fold.gap,
        "method": "walk-forward refit of the version's recipe; baseline scored on the same test rows",
        "metrics": wf.metrics,
        "baseline_metrics": wf.baseline_metrics,
        "spread": wf.spread,
        "baseline_spread": wf.baseline_spread,
        "checks": checks,
        "per_fold": [{"index": f.fold.index, "metrics": f.metrics, "baseline": f.baseline_metrics} for f in wf.folds],
    }
    if wf.bayes_auc is not None:
        doc["bayes_auc"] = wf.bayes_auc
    if ds.name == manifest.data and recipe.seed == manifest.extra.get("seed") and manifest.metrics:
        # Same data, same recipe, same seed: the figures must be the ones recorded at training time.
        doc["reproduced"] = all(
            abs(manifest.metrics[k] - wf.metrics[k]) <= 1e-9 for k in manifest.metrics if k in wf.metrics
        )
    if importance:
        doc["importance"] = fold_importance(ds, wf, seed=recipe.seed)
    out: dict[str, Any] = jsonable(doc)
    return out


def fold_importance(ds: Dataset, wf: WalkForward, *, seed: int = 0) -> dict[str, dict[str, float]]:
    """Gain (mean over the fold models, when they have one) and permutation importance on the folds."""
    out: dict[str, dict[str, float]] = {}
    gains = [f.model.importance() for f in wf.folds if isinstance(f.model, TrainedModel)]
    if gains:
        out["gain"] = {name: float(np.mean([g[name] for g in gains])) for name in gains[0]}
    out["permutation"] = permutation_importance(ds, wf, seed=seed)
    return out

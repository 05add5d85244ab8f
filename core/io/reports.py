"""Reports people look at: ROC and calibration curves, feature importance, and the JSON/text files beside them.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global state); saving a
PNG uses matplotlib's Agg renderer, so no display is needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from spark_ml.core.ml.evaluate import auc

__all__ = [
    "calibration_figure",
    "calibration_table",
    "eval_text",
    "importance_figure",
    "roc_curve",
    "roc_figure",
    "write_eval_report",
    "write_json",
    "write_train_report",
]


def roc_curve(y: ArrayLike, s: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """False and true positive rates at every distinct score threshold, from (0, 0) to (1, 1)."""
    ya = np.asarray(y).astype(np.int64)
    sa = np.asarray(s, dtype=np.float64)
    order = np.argsort(-sa, kind="mergesort")
    ys, ss = ya[order], sa[order]
    last_of_run = np.r_[ss[1:] != ss[:-1], True]
    tp = np.cumsum(ys)[last_of_run]
    fp = np.cumsum(1 - ys)[last_of_run]
    pos, neg = max(int(ya.sum()), 1), max(int((1 - ya).sum()), 1)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def roc_figure(y: ArrayLike, curves: Mapping[str, ArrayLike], *, title: str = "ROC (out-of-sample folds)") -> Figure:
    """One ROC curve per named score vector, AUC in the legend, chance diagonal."""
    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    for name, s in curves.items():
        fp_rate, tp_rate = roc_curve(y, s)
        ax.plot(fp_rate, tp_rate, label=f"{name} (pooled AUC {auc(y, s):.3f})", linewidth=1.5)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def calibration_table(y: ArrayLike, s: ArrayLike, bins: int = 10) -> list[dict[str, float]]:
    """Rows split into ``bins`` equal-count groups by score: mean score, share of ups, count, per group."""
    ya = np.asarray(y, dtype=np.float64)
    sa = np.asarray(s, dtype=np.float64)
    order = np.argsort(sa, kind="mergesort")
    out = []
    for chunk in np.array_split(order, min(bins, max(1, sa.size))):
        if chunk.size:
            out.append({"score": float(sa[chunk].mean()), "observed": float(ya[chunk].mean()), "n": int(chunk.size)})
    return out


def calibration_figure(y: ArrayLike, curves: Mapping[str, ArrayLike], *, bins: int = 10) -> Figure:
    """Reliability diagram (mean score vs observed share of ups, equal-count bins) over a score histogram."""
    fig = Figure(figsize=(5.5, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    lo, hi = 1.0, 0.0
    for name, s in curves.items():
        table = calibration_table(y, s, bins)
        top.plot([r["score"] for r in table], [r["observed"] for r in table], marker="o", label=name)
        sa = np.asarray(s, dtype=np.float64)
        bottom.hist(sa, bins=40, alpha=0.5, label=name)
        lo, hi = min(lo, float(sa.min())), max(hi, float(sa.max()))
    pad = 0.02
    top.plot([lo - pad, hi + pad], [lo - pad, hi + pad], linestyle="--", color="grey", linewidth=1, label="perfect")
    top.set(ylabel="observed share of up moves", title="Calibration (out-of-sample folds)")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set(xlabel="predicted probability of an up move", ylabel="rows")
    return fig


def importance_figure(importance: Mapping[str, Mapping[str, float]], *, fold_gain: bool = False) -> Figure:
    """Horizontal bars per importance kind (``gain``, ``permutation``), features sorted by the first kind.

    ``fold_gain``: the gain is the mean over the walk-forward fold models, not the final model's.
    """
    kinds = list(importance)
    fig = Figure(figsize=(5.0 * max(1, len(kinds)), 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(kinds)), sharey=True))
    names = sorted(importance[kinds[0]], key=lambda n: importance[kinds[0]][n]) if kinds else []
    labels = {
        "gain": "gain (final model)" if not fold_gain else "gain (mean over the fold models)",
        "permutation": "permutation: AUC drop when shuffled (out-of-sample)",
    }
    for ax, kind in zip(axes, kinds, strict=False):
        values = [importance[kind].get(n, 0.0) for n in names]
        ax.barh(names, values, color="tab:blue" if kind == "gain" else "tab:orange")
        ax.set_title(labels.get(kind, kind), fontsize=10)
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.grid(axis="x", alpha=0.3)
    return fig


def write_json(path: Path, doc: Any) -> Path:
    """Pretty JSON (no NaN: callers pass :func:`spark_ml.core.ml.training.jsonable` output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def write_train_report(
    out: Path,
    doc: Mapping[str, Any],
    y: ArrayLike,
    scores: ArrayLike,
    baseline_scores: ArrayLike,
    importance: Mapping[str, Mapping[str, float]],
) -> list[Path]:
    """``report.json``, ``roc.png``, ``calibration.png`` and ``importance.png`` in ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    curves = {str(doc.get("kind", "model")): scores, "baseline": baseline_scores}
    return [
        write_json(out / "report.json", doc),
        _save(roc_figure(y, curves), out / "roc.png"),
        _save(calibration_figure(y, curves), out / "calibration.png"),
        _save(importance_figure(importance), out / "importance.png"),
    ]


def eval_text(doc: Mapping[str, Any], checks: Sequence[Mapping[str, Any]]) -> str:
    """The PASS/FAIL summary: verdict on the first line, then one line per check."""
    lines = [
        "PASS" if doc["passed"] else "FAIL",
        f"version: {doc['version']}  data: {doc['data']}  folds: {doc['folds']}  method: {doc['method']}",
    ]
    for c in checks:
        value = "nan" if c["value"] is None else f"{c['value']:.4f}"
        threshold = "nan" if c["threshold"] is None else f"{c['threshold']:.4f}"
        lines.append(
            f"{'ok  ' if c['passed'] else 'FAIL'} {c['metric']} = {value} {c['op']} {threshold}  ({c['name']})"
        )
    return "\n".join(lines) + "\n"


def write_eval_report(out: Path, doc: Mapping[str, Any]) -> list[Path]:
    """``eval_report.json`` and ``eval_result.txt`` (PASS/FAIL first) in ``out``; ``importance.png`` too
    when the report carries ``importance``."""
    out.mkdir(parents=True, exist_ok=True)
    text = out / "eval_result.txt"
    text.write_text(eval_text(doc, doc["checks"]))
    paths = [write_json(out / "eval_report.json", doc), text]
    if doc.get("importance"):
        paths.append(_save(importance_figure(doc["importance"], fold_gain=True), out / "importance.png"))
    return paths

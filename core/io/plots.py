"""The figures of the reports: ROC, calibration and importance (train, eval), PSI over time (drift), equity.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global state); nothing
here writes: :mod:`spark_ml.core.io.reports` saves them with matplotlib's Agg renderer (no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.ml.calibration import Measured
from spark_ml.core.ml.drift import DriftThresholds
from spark_ml.core.ml.evaluate import auc
from spark_ml.core.trading.analytics import drawdown_series
from spark_ml.core.trading.report import Comparison

__all__ = [
    "calibration_figure",
    "calibration_table",
    "drift_figure",
    "equity_figure",
    "importance_figure",
    "roc_curve",
    "roc_figure",
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


def drift_figure(m: Measured, levels: DriftThresholds) -> Figure:
    """PSI over time per feature: a normal period (blue), a regime change (red), the configured levels."""
    fig = Figure(figsize=(15, 11), layout="constrained")
    axes = fig.subplots(4, 3).ravel()
    for ax, f in zip(axes, FEATURE_NAMES, strict=False):
        trace = m.trace[f]
        ax.plot(m.trace_start + np.arange(trace.size), np.maximum(trace, 1e-3), color="tab:blue", lw=0.8)
        if m.change_at is not None and m.stressed:
            s = m.stressed[f]
            ax.plot(m.change_at + np.arange(s.size), np.maximum(s, 1e-3), color="tab:red", lw=0.8)
            ax.axvline(m.change_at, color="tab:red", lw=0.6, ls=":")
        lv = levels.levels(f)
        ax.axhline(lv["warning"], color="tab:orange", ls="--", lw=0.8)
        ax.axhline(lv["critical"], color="tab:red", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f, fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].axis("off")
    axes[-1].text(
        0.0,
        0.5,
        f"{m.name}: PSI of a {m.window}-snapshot window vs the reference\n"
        "blue: normal period after the 50% split\nred: replayed regime change (dotted: change)\n"
        "dashed: warning / critical levels (core/drift.toml)",
        fontsize=10,
        va="center",
    )
    fig.suptitle(f"Feature drift on {m.name} (x: bar index where the window ends)")
    return fig


def equity_figure(comparison: Comparison) -> Figure:
    """Equity curves and drawdowns of the backtested strategies, over the traded bars."""
    when = np.asarray(comparison.ts, dtype="datetime64[ms]")
    fig = Figure(figsize=(10, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for name, res in comparison.results.items():
        top.plot(when, res.equity, label=name, linewidth=1.0)
        dd = np.concatenate(([0.0], drawdown_series(res.returns)))
        bottom.plot(when, -100 * dd, linewidth=0.8)
    top.set_ylabel("equity (start = 1)")
    top.set_title(f"{comparison.doc['symbol']}: out-of-sample equity after costs")
    top.legend(loc="best")
    top.grid(alpha=0.3)
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    return fig

"""Out-of-sample evaluation: classification metrics, walk-forward folds with a gap, spread across folds.

Metric definitions (``y`` are 0/1 labels, ``s`` the scores, ``n`` rows):

- ``auc``: area under the ROC curve, the probability that a random positive scores above a random negative,
  ties counting one half (Mann-Whitney); NaN when a fold holds one class only.
- ``accuracy``: share of rows where ``s >= 0.5`` equals ``y == 1``.
- ``precision_at_20`` / ``recall_at_20``: rank rows by score, highest first (equal scores keep their time
  order, earlier first); the top set is the first ``k = ceil(0.2 * n)`` rows. Precision@20 is the share of
  positives in the top set, recall@20 the share of all positives that fall in it. Note that recall@20 can
  never exceed ``k / positives``: about 0.4 when half the rows are positive, and then only with a perfect
  precision@20.
- ``log_loss``: mean negative log-likelihood of the labels, scores clipped to ``[1e-15, 1 - 1e-15]``.
- ``brier``: mean squared difference between the score and the label (0 is perfect, 0.25 a constant 0.5).

Walk-forward: the evaluation rows (in time order) are cut into ``folds + 1`` equal blocks; fold ``k`` tests
on block ``k + 1`` and trains on every row before it except the last ``gap`` ones, so training is strictly
before testing and the rows just before a test block (whose rolling features overlap it) are left out.
"""

from __future__ import annotations

import math
import operator
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spark_ml.core.features import WARMUP

__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "Slo",
    "TOP_FRACTION",
    "Fold",
    "accuracy",
    "auc",
    "brier",
    "check_slo",
    "choose_folds",
    "default_gap",
    "load_slo",
    "log_loss",
    "metrics",
    "precision_recall_at",
    "spread",
    "summarize",
    "walk_forward",
]

METRICS: tuple[str, ...] = ("auc", "accuracy", "precision_at_20", "recall_at_20", "log_loss")
LOWER_IS_BETTER = frozenset({"log_loss"})
TOP_FRACTION = 0.2
MAX_FOLDS = 5
"""Folds used when the caller does not say: fewer only when the series is too short for five."""
MIN_TRAIN = 30
"""Fewest training rows a fold may have."""
MIN_TEST = 10
"""Fewest test rows a fold may have."""

# Two-sided 95% Student t quantiles by degrees of freedom; folds are few, so the normal 1.96 would be too narrow.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def _arrays(y: ArrayLike, s: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    ya = np.asarray(y).astype(np.int64, copy=False)
    sa = np.asarray(s, dtype=np.float64)
    if ya.shape != sa.shape or ya.ndim != 1:
        raise ValueError(f"labels {ya.shape} and scores {sa.shape} must be 1-d and of one length")
    return ya, sa


def auc(y: ArrayLike, s: ArrayLike) -> float:
    """ROC AUC by average ranks (ties count one half); NaN when only one class is present."""
    ya, sa = _arrays(y, s)
    pos = int(ya.sum())
    neg = ya.size - pos
    if pos == 0 or neg == 0:
        return math.nan
    order = np.argsort(sa, kind="mergesort")
    sorted_s = sa[order]
    # Average rank of each run of equal scores: ranks first+1 .. last+1 share their mean.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], sorted_s.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(sa.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[ya == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def accuracy(y: ArrayLike, s: ArrayLike) -> float:
    """Share of rows where ``score >= 0.5`` matches the label."""
    ya, sa = _arrays(y, s)
    return float(np.mean((sa >= 0.5) == (ya == 1))) if ya.size else math.nan


def precision_recall_at(y: ArrayLike, s: ArrayLike, fraction: float = TOP_FRACTION) -> tuple[float, float]:
    """Precision and recall among the top ``ceil(fraction * n)`` scores (ties keep time order)."""
    ya, sa = _arrays(y, s)
    if ya.size == 0:
        return math.nan, math.nan
    k = max(1, math.ceil(fraction * ya.size))
    top = np.argsort(-sa, kind="stable")[:k]
    hits = int(ya[top].sum())
    positives = int(ya.sum())
    return hits / k, (hits / positives if positives else math.nan)


def log_loss(y: ArrayLike, s: ArrayLike, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy."""
    ya, sa = _arrays(y, s)
    p = np.clip(sa, eps, 1.0 - eps)
    return float(-np.mean(np.where(ya == 1, np.log(p), np.log1p(-p)))) if ya.size else math.nan


def brier(y: ArrayLike, s: ArrayLike) -> float:
    """Mean squared error of the scores against the 0/1 labels."""
    ya, sa = _arrays(y, s)
    return float(np.mean((sa - ya) ** 2)) if ya.size else math.nan


def metrics(y: ArrayLike, s: ArrayLike) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one set of labels and scores."""
    precision, recall = precision_recall_at(y, s)
    return {
        "auc": auc(y, s),
        "accuracy": accuracy(y, s),
        "precision_at_20": precision,
        "recall_at_20": recall,
        "log_loss": log_loss(y, s),
    }


@dataclass(frozen=True, slots=True)
class Fold:
    """One walk-forward split, as half-open position ranges into the evaluation rows.

    Args:
        index: fold number, 0 first.
        train_start: first training position (always 0: the window expands).
        train_end: one past the last training position; ``test_start - gap``.
        test_start: first test position.
        test_end: one past the last test position.
    """

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    @property
    def train(self) -> slice:
        return slice(self.train_start, self.train_end)

    @property
    def test(self) -> slice:
        return slice(self.test_start, self.test_end)

    @property
    def gap(self) -> int:
        return self.test_start - self.train_end

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "gap": self.gap}


def default_gap(n: int) -> int:
    """Rows left out between train and test: the feature warm-up (35), less on short series (2% of rows)."""
    return max(1, min(WARMUP, n // 50))


def walk_forward(n: int, *, folds: int = 5, gap: int | None = None) -> list[Fold]:
    """Expanding-window folds over ``n`` time-ordered rows; ValueError when they would be too small."""
    if folds < 1:
        raise ValueError("folds must be >= 1")
    gap = default_gap(n) if gap is None else gap
    if gap < 0:
        raise ValueError("gap must be >= 0")
    block = n // (folds + 1)
    if block < MIN_TEST or block - gap < MIN_TRAIN:
        raise ValueError(
            f"{n} rows are too few for {folds} folds with a gap of {gap} "
            f"(each block has {block} rows; need {MIN_TEST} to test and {MIN_TRAIN} to train)"
        )
    out = []
    for k in range(folds):
        test_start = (k + 1) * block
        test_end = n if k == folds - 1 else test_start + block
        out.append(Fold(k, 0, test_start - gap, test_start, test_end))
    return out


def choose_folds(n: int, *, gap: int | None = None, most: int = MAX_FOLDS) -> int:
    """The largest number of folds, at most ``most``, that :func:`walk_forward` can make from ``n`` rows."""
    for k in range(most, 1, -1):
        try:
            walk_forward(n, folds=k, gap=gap)
        except ValueError:
            continue
        return k
    return 1


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample std, min, max and a 95% t-interval of the mean across folds (NaN folds ignored)."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        nan = math.nan
        return {"mean": nan, "std": nan, "min": nan, "max": nan, "ci95_low": nan, "ci95_high": nan, "n": 0}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    half = _T975.get(v.size - 1, 1.96) * std / math.sqrt(v.size) if v.size > 1 else 0.0
    return {
        "mean": mean,
        "std": std,
        "min": float(v.min()),
        "max": float(v.max()),
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "n": int(v.size),
    }


def summarize(per_fold: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Headline metrics (the mean over folds) and the spread of each metric."""
    names = list(per_fold[0]) if per_fold else list(METRICS)
    spreads = {name: spread([m[name] for m in per_fold]) for name in names}
    return {name: spreads[name]["mean"] for name in names}, spreads


@dataclass(frozen=True, slots=True)
class Slo:
    """Thresholds of the evaluation gate (``core/slo.toml``).

    Args:
        minimum: metric -> lowest acceptable value.
        above: metric -> a value it must strictly exceed (a criterion written as "> x").
        maximum: metric -> highest acceptable value.
        beat_baseline: metrics on which the model must do strictly better than the baseline on the same folds.
    """

    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)
    beat_baseline: tuple[str, ...] = ("auc",)
    above: dict[str, float] = field(default_factory=dict)


def load_slo(path: Path | str | None = None) -> Slo:
    """Read the gate's thresholds; the packaged ``core/slo.toml`` by default. ValueError when malformed."""
    if path is None:
        text = resources.files("spark_ml.core.ml").joinpath("slo.toml").read_text()
    else:
        text = Path(path).read_text()
    try:
        doc = tomllib.loads(text)
        slo = Slo(
            minimum={str(k): float(v) for k, v in doc.get("minimum", {}).items()},
            maximum={str(k): float(v) for k, v in doc.get("maximum", {}).items()},
            beat_baseline=tuple(str(m) for m in doc.get("beat_baseline", {}).get("metrics", ["auc"])),
            above={str(k): float(v) for k, v in doc.get("above", {}).items()},
        )
    except (tomllib.TOMLDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"bad SLO file: {exc}") from exc
    unknown = {*slo.minimum, *slo.above, *slo.maximum, *slo.beat_baseline} - set(METRICS)
    if unknown:
        raise ValueError(f"bad SLO file: unknown metrics {', '.join(sorted(unknown))}")
    return slo


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


def check_slo(
    model: Mapping[str, float],
    baseline: Mapping[str, float],
    slo: Slo,
    spread: Mapping[str, Mapping[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """One check per threshold and per baseline comparison: name, value, threshold, passed. NaN never passes.

    The verdict compares the mean over the folds with the line. With ``spread`` (each metric's spread across
    the folds, as :func:`summarize` gives it), a check also carries ``ci95``, the 95% interval of that mean,
    and ``settled``: whether the whole interval lies on the verdict's side of the line (a mean just past the
    line with an interval across it is a verdict the folds do not settle). A baseline comparison uses the
    model's interval against the baseline's mean.
    """
    lines = [(m, ">=", b) for m, b in slo.minimum.items()]
    lines += [(m, ">", b) for m, b in slo.above.items()]
    lines += [(m, "<=", b) for m, b in slo.maximum.items()]
    checks = [_check(f"{m} {op} {b}", m, model[m], op, b, spread) for m, op, b in lines]
    for metric in slo.beat_baseline:
        op = "<" if metric in LOWER_IS_BETTER else ">"
        checks.append(_check(f"{metric} {op} baseline", metric, model[metric], op, baseline[metric], spread))
    return checks


def _check(
    name: str, metric: str, value: float, op: str, threshold: float, spread: Mapping[str, Mapping[str, float]] | None
) -> dict[str, Any]:
    passes = _OPS[op]
    ok = not math.isnan(value) and not math.isnan(threshold) and passes(value, threshold)
    out: dict[str, Any] = {"name": name, "metric": metric, "op": op, "threshold": threshold, "value": value}
    out["passed"] = ok
    if spread is not None and metric in spread:
        low, high = spread[metric]["ci95_low"], spread[metric]["ci95_high"]
        out["ci95"] = [low, high]
        ends = [passes(v, threshold) for v in (low, high) if not math.isnan(v) and not math.isnan(threshold)]
        out["settled"] = len(ends) == 2 and all(e == ok for e in ends)
    return out

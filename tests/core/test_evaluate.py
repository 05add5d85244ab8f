"""Metrics against scikit-learn and hand-worked cases; walk-forward folds never train on the future."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from core.evaluate import (
    METRICS,
    accuracy,
    auc,
    default_gap,
    log_loss,
    metrics,
    precision_recall_at,
    spread,
    summarize,
    walk_forward,
)

labelled = st.lists(
    st.tuples(st.integers(0, 1), st.sampled_from([0.1, 0.3, 0.5, 0.7]) | st.floats(0.0, 1.0)), min_size=2, max_size=60
).filter(lambda rows: len({y for y, _ in rows}) == 2)


@given(labelled)
def test_auc_accuracy_log_loss_match_sklearn(rows: list[tuple[int, float]]) -> None:
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows])
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert accuracy(y, s) == pytest.approx(accuracy_score(y, s >= 0.5))
    clipped = np.clip(s, 1e-15, 1 - 1e-15)
    assert log_loss(y, s) == pytest.approx(sk_log_loss(y, clipped, labels=[0, 1]), rel=1e-9)


def test_auc_of_one_class_is_nan() -> None:
    assert math.isnan(auc([1, 1, 1], [0.1, 0.5, 0.9]))


def test_precision_recall_at_20_by_hand() -> None:
    # 10 rows -> top k = ceil(0.2 * 10) = 2 rows; scores 0.9 and 0.8 are a positive and a negative
    y = [1, 0, 1, 1, 0, 0, 1, 0, 0, 0]
    s = [0.9, 0.8, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.05, 0.01]
    assert precision_recall_at(y, s) == (0.5, 0.25)
    # 11 rows -> k = ceil(2.2) = 3
    assert precision_recall_at([*y, 1], [*s, 0.85]) == (2 / 3, 2 / 5)


def test_ties_at_the_cut_keep_time_order() -> None:
    # Four equal scores, k = 1: the earliest row is the one taken
    assert precision_recall_at([1, 0, 0, 0, 0], [0.5, 0.5, 0.5, 0.5, 0.1]) == (1.0, 1.0)
    assert precision_recall_at([0, 1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5, 0.1]) == (0.0, 0.0)


def test_recall_at_20_is_bounded_by_the_positive_rate() -> None:
    # Even a perfect ranking cannot put more than k of the positives in the top k
    y = np.array([1, 0] * 50)
    assert precision_recall_at(y, y.astype(float)) == (1.0, 20 / 50)


def test_metrics_has_every_name() -> None:
    assert tuple(metrics([0, 1, 1, 0], [0.2, 0.7, 0.6, 0.4])) == METRICS


@given(n=st.integers(100, 5000), folds=st.integers(1, 8), gap=st.integers(0, 40))
def test_walk_forward_trains_strictly_before_testing(n: int, folds: int, gap: int) -> None:
    try:
        splits = walk_forward(n, folds=folds, gap=gap)
    except ValueError:
        assert n // (folds + 1) < 10 or n // (folds + 1) - gap < 30
        return
    assert len(splits) == folds
    for k, f in enumerate(splits):
        assert f.index == k and f.train_start == 0
        assert f.train_end + gap == f.test_start and f.gap == gap
        assert f.train_end - f.train_start >= 30 and f.test_end - f.test_start >= 10
    # Test blocks tile the tail of the series without overlap
    assert [f.test_end for f in splits[:-1]] == [f.test_start for f in splits[1:]]
    assert splits[-1].test_end == n


def test_walk_forward_refuses_too_few_rows() -> None:
    with pytest.raises(ValueError, match="too few"):
        walk_forward(50, folds=5)


def test_default_gap_is_warmup_or_less_on_short_series() -> None:
    assert default_gap(5000) == 35
    assert default_gap(120) == 2
    assert default_gap(10) == 1


def test_spread_by_hand() -> None:
    out = spread([0.5, 0.6, 0.7, math.nan])
    assert out["n"] == 3 and out["mean"] == pytest.approx(0.6)
    assert out["std"] == pytest.approx(0.1)
    # t(2 df, 97.5%) = 4.303: half-width 4.303 * 0.1 / sqrt(3)
    assert out["ci95_high"] - out["mean"] == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert (out["min"], out["max"]) == (0.5, 0.7)
    means, spreads = summarize([{"auc": 0.5}, {"auc": 0.7}])
    assert means == {"auc": pytest.approx(0.6)} and spreads["auc"]["n"] == 2

"""The synthetic bed: deterministic, a true probability that is true, and an exact Bayes AUC."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.ml.evaluate import auc
from spark_ml.core.ml.synthetic import SyntheticConfig, bayes_auc, bayes_auc_mc, generate, planted_score
from spark_ml.core.models import fit_model


def _brute_force(p: np.ndarray) -> float:
    num = den = 0.0
    for i, j in itertools.permutations(range(p.size), 2):
        w = p[i] * (1 - p[j])
        den += w
        num += w * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
    return num / den


@given(st.lists(st.sampled_from([0.1, 0.25, 0.5, 0.7, 0.9]) | st.floats(0.01, 0.99), min_size=2, max_size=25))
def test_bayes_auc_equals_pair_count(p: list[float]) -> None:
    arr = np.asarray(p)
    assert bayes_auc(arr) == pytest.approx(_brute_force(arr), rel=1e-12, abs=1e-12)


def test_bayes_auc_agrees_with_monte_carlo() -> None:
    ds = generate(SyntheticConfig(n_bars=4000, seed=7))
    p = ds.extra["p_up"][ds.rows()]
    exact = bayes_auc(p)
    mean, se = bayes_auc_mc(p, draws=300, seed=1)
    assert abs(mean - exact) < 4 * se + 1e-3


def test_same_seed_same_series_other_seed_other_series() -> None:
    a = generate(SyntheticConfig(n_bars=500, seed=1))
    b = generate(SyntheticConfig(n_bars=500, seed=1))
    c = generate(SyntheticConfig(n_bars=500, seed=2))
    assert np.array_equal(a.close, b.close) and np.array_equal(a.features, b.features)
    assert np.array_equal(a.extra["p_up"], b.extra["p_up"])
    assert not np.array_equal(a.close, c.close)


def test_p_up_is_the_true_probability() -> None:
    # Given a bed and its stored probabilities
    ds = generate(SyntheticConfig(n_bars=20_000, seed=11))
    x, y = ds.xy()
    p = ds.extra["p_up"][ds.rows()]
    # Then p is exactly Phi of the planted score of the features the serving code computed
    z = planted_score(x, SyntheticConfig())
    assert np.allclose(p, [0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z], rtol=0, atol=1e-15)
    # And the labels are calibrated to it: in each quintile of p, the share of ups matches the mean p
    edges = np.quantile(p, [0.2, 0.4, 0.6, 0.8])
    bins = np.searchsorted(edges, p)
    for b in range(5):
        sel = bins == b
        se = math.sqrt(p[sel].mean() * (1 - p[sel].mean()) / sel.sum())
        assert abs(y[sel].mean() - p[sel].mean()) < 4 * se


def test_strength_tunes_the_limit() -> None:
    limits = []
    for strength in (0.0, 0.2, 0.45, 0.8):
        ds = generate(SyntheticConfig(n_bars=3000, seed=5, strength=strength))
        limits.append(bayes_auc(ds.extra["p_up"][ds.rows()]))
    assert limits[0] == 0.5
    assert limits == sorted(limits) and len(set(limits)) == 4


def test_default_bed_limit_and_trees_learn_what_a_line_cannot() -> None:
    # Given the default bed, trained on its first 60% and tested on the rest
    ds = generate()
    x, y = ds.xy()
    p = ds.extra["p_up"][ds.rows()]
    cut = int(0.6 * len(y))
    limit = bayes_auc(p[cut:])
    scores = {}
    for kind in ("logistic", "lgbm"):
        model = fit_model(kind, x[:cut], y[:cut], feature_names=FEATURE_NAMES, seed=0)
        scores[kind] = auc(y[cut:], model.predict_proba(x[cut:]))
    # Then the limit is at least the seeds' 0.65, trees come close to it, and the linear model cannot
    assert limit >= 0.65
    assert scores["lgbm"] >= limit - 0.02
    assert scores["lgbm"] - scores["logistic"] > 0.03
    # And no model beats the oracle on the same labels by more than noise
    assert scores["lgbm"] <= auc(y[cut:], p[cut:]) + 0.01

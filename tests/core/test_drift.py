"""PSI and the sliding-window drift monitor, against direct computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.ml.drift import (
    DriftMonitor,
    bin_index,
    first_crossing,
    inner_edges,
    load_thresholds,
    psi,
    reference_from,
    stressed_closes,
    window_psi,
)
from spark_ml.core.ml.training import bin_fractions, reference_distribution


def test_psi_by_hand() -> None:
    e = np.array([0.5, 0.5])
    a = np.array([0.25, 0.75])
    assert psi(e, a) == pytest.approx((0.25 - 0.5) * np.log(0.5) + (0.75 - 0.5) * np.log(1.5))
    assert psi(e, e) == 0.0


def test_same_distribution_has_small_psi_shifted_has_large() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20_000, 2))
    ref = reference_from(train, ["a", "b"])
    mon = DriftMonitor(ref, {"a": 0, "b": 1}, window=5000)
    mon.update(rng.normal(size=(5000, 2)))
    calm = mon.psi()
    assert calm["a"] < 0.02 and calm["b"] < 0.02
    shifted = rng.normal(size=(5000, 2))
    shifted[:, 0] += 1.0
    mon.update(shifted)
    now = mon.psi()
    assert now["a"] > 0.25 and now["b"] < 0.02


@given(st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=12), st.integers(0, 1000))
def test_window_counts_equal_direct_computation(batch_sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = reference_from(rng.normal(size=(500, 1)), ["f"], bins=5)
    mon = DriftMonitor(ref, {"f": 0}, window=100)
    seen = []
    for n in batch_sizes:
        rows = rng.normal(size=(n, 1)) * 1.5
        mon.update(rows)
        seen.extend(rows[:, 0].tolist())
    last = np.array(seen[-100:])
    inner = inner_edges(ref["f"]["edges"], len(ref["f"]["fractions"]))
    direct = np.bincount(np.searchsorted(inner, last, side="left"), minlength=len(ref["f"]["fractions"])) / len(last)
    assert mon.psi()["f"] == pytest.approx(psi(np.array(ref["f"]["fractions"]), direct))


def test_edges_with_or_without_outer_bounds() -> None:
    assert inner_edges([0, 1, 2, 3], 3).tolist() == [1, 2]
    assert inner_edges([1, 2], 3).tolist() == [1, 2]
    assert inner_edges([5.0], 1).tolist() == []
    with pytest.raises(ValueError):
        inner_edges([1], 3)


def test_constant_feature_reference_from_training_is_monitored() -> None:
    # Given a training reference with a constant column (the built-in CSVs carry no spread: one edge, one bin)
    rng = np.random.default_rng(2)
    x = np.c_[rng.normal(size=500), np.zeros(500)]
    ref = reference_distribution(x, ["a", "spread_bp"])
    assert ref["spread_bp"] == {"edges": [0.0], "fractions": [1.0]}
    # When the worker's monitor takes it, Then it does not refuse it and the constant feature shows no drift
    mon = DriftMonitor(ref, {"a": 0, "spread_bp": 1}, window=100)
    mon.update(np.c_[rng.normal(size=100), np.zeros(100)])
    assert mon.psi()["spread_bp"] == 0.0


def test_bins_follow_the_training_convention_at_the_edges() -> None:
    # Values equal to a cut point: the monitor must count them where training counted them
    x = np.repeat([1.0, 2.0, 3.0, 4.0], 25)
    ref = reference_distribution(x[:, None], ["f"], bins=4)
    edges = ref["f"]["edges"]
    inner = inner_edges(edges, len(ref["f"]["fractions"]))
    counts = np.bincount(bin_index(inner, x), minlength=len(inner) + 1) / len(x)
    assert counts.tolist() == pytest.approx(bin_fractions(x, edges).tolist())
    mon = DriftMonitor(ref, {"f": 0}, window=100)
    mon.update(x[:, None])
    assert mon.psi()["f"] == pytest.approx(0.0)
    assert reference_from(x[:, None], ["f"], bins=4) == ref


@given(st.integers(0, 1000), st.integers(5, 60))
def test_window_psi_is_what_the_monitor_reports_after_each_row(seed: int, window: int) -> None:
    rng = np.random.default_rng(seed)
    ref = reference_from(rng.normal(size=(400, 2)), ["a", "b"], bins=6)
    x = rng.normal(size=(window + 30, 2)) * [1.0, 2.0]
    series = window_psi(ref, x, ["a", "b"], window)
    mon = DriftMonitor(ref, {"a": 0, "b": 1}, window=window)
    mon.update(x[: window - 1])
    for k in range(len(x) - window + 1):
        mon.update(x[window - 1 + k : window + k])
        now = mon.psi()
        assert series["a"][k] == pytest.approx(now["a"]) and series["b"][k] == pytest.approx(now["b"])
    assert window_psi(ref, x[: window - 1], ["a", "b"], window)["a"].size == 0


def test_stressed_closes_change_only_returns_from_the_start_bar() -> None:
    close = 100.0 * np.exp(np.cumsum(np.r_[0.0, np.random.default_rng(3).normal(0, 1e-3, 99)]))
    out = stressed_closes(close, 40, vol_factor=3.0, trend_bp=5.0)
    assert out[:40].tolist() == pytest.approx(close[:40].tolist(), rel=1e-12)
    before, after = np.diff(np.log(close)), np.diff(np.log(out))
    assert after[39:] == pytest.approx(before[39:] * 3.0 + 5e-4)
    assert after[:39] == pytest.approx(before[:39])


def test_first_crossing() -> None:
    v = np.array([0.1, 0.5, 0.2, 0.6, 0.7])
    assert first_crossing(v, 0.5) == 1
    assert first_crossing(v, 0.5, start=2) == 3
    assert first_crossing(v, 0.9) is None


def test_packaged_thresholds_cover_every_feature(tmp_path) -> None:
    levels = load_thresholds()
    assert levels.window >= 100
    for f in FEATURE_NAMES:
        assert f in levels.warning and f in levels.critical, f
        assert 0 < levels.levels(f)["warning"] <= levels.levels(f)["critical"]
    # volatility features drift more than returns in a normal period: their levels say so
    assert levels.levels("vol_20")["critical"] > levels.levels("ret_1")["warning"]
    bad = tmp_path / "bad.toml"
    bad.write_text("window = 100\n[warning]\nret_1 = 0.5\n[critical]\nret_1 = 0.2\n")
    with pytest.raises(ValueError, match="warning <= critical"):
        load_thresholds(bad)
    bad.write_text("[warning]\n")
    with pytest.raises(ValueError, match="bad drift thresholds"):
        load_thresholds(bad)


def test_calibrate_command_writes_json_and_figure(tmp_path, capsys) -> None:
    from spark_ml.scripts.drift import main

    code = main(
        ["calibrate", "--data", "goog", "--window", "300", "--horizon", "200", "--out", str(tmp_path), "--json"]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    goog = doc["data"]["goog"]
    assert goog["windows"] > 1000 and goog["change_points"] >= 1
    q = goog["features"]["vol_20"]["normal"]
    assert 0 <= q["p50"] <= q["p95"] <= q["p99"] <= q["max"]
    assert goog["features"]["vol_20"]["regime_change_delay"]["detected"] >= 1
    assert set(doc["proposed"]) == set(FEATURE_NAMES)
    assert (tmp_path / "drift_calibration.json").exists() and (tmp_path / "drift_goog.png").stat().st_size > 10_000


@given(st.integers(0, 10_000), st.integers(1, 80), st.booleans())
def test_vectorized_bins_equal_bin_index_per_feature(seed: int, n: int, specials: bool) -> None:
    # Features with different numbers of bins, a constant one (no cut point), values on the cut points,
    # and (when asked) NaN and infinities: one comparison for all must give searchsorted's answer for each.
    rng = np.random.default_rng(seed)
    train = np.c_[rng.normal(size=400), rng.integers(0, 3, 400).astype(float), np.zeros(400), rng.exponential(size=400)]
    ref = reference_distribution(train, ["a", "b", "c", "d"], bins=7)
    mon = DriftMonitor(ref, {"a": 0, "b": 1, "c": 2, "d": 3}, window=50, chunk=16)
    rows = np.c_[rng.normal(size=n), rng.integers(0, 3, n).astype(float), rng.normal(size=n), rng.exponential(size=n)]
    if specials:
        rows.ravel()[rng.integers(0, rows.size, max(1, rows.size // 5))] = rng.choice(
            [np.nan, np.inf, -np.inf, 0.0, 1.0]
        )
    want = np.stack(
        [bin_index(inner_edges(ref[f]["edges"], len(ref[f]["fractions"])), rows[:, j]) for j, f in enumerate("abcd")],
        axis=1,
    )
    assert mon.bins(rows).tolist() == want.tolist()


def test_gathered_rows_count_before_they_are_binned() -> None:
    rng = np.random.default_rng(5)
    ref = reference_from(rng.normal(size=(500, 1)), ["f"], bins=5)
    mon = DriftMonitor(ref, {"f": 0}, window=100, chunk=64)
    rows = rng.normal(size=(10, 1))
    mon.update(rows)
    assert mon.seen == 10
    inner = inner_edges(ref["f"]["edges"], len(ref["f"]["fractions"]))
    direct = np.bincount(bin_index(inner, rows[:, 0]), minlength=len(ref["f"]["fractions"]))
    assert mon.counts()[0].tolist() == direct.tolist()
    assert mon.psi()["f"] == pytest.approx(psi(np.array(ref["f"]["fractions"]), direct / 10))

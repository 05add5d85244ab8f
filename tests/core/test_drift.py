"""PSI and the sliding-window drift monitor, against direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.drift import DriftMonitor, inner_edges, psi, reference_from


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
    direct = np.bincount(np.searchsorted(inner, last, side="right"), minlength=len(ref["f"]["fractions"])) / len(last)
    assert mon.psi()["f"] == pytest.approx(psi(np.array(ref["f"]["fractions"]), direct))


def test_edges_with_or_without_outer_bounds() -> None:
    assert inner_edges([0, 1, 2, 3], 3).tolist() == [1, 2]
    assert inner_edges([1, 2], 3).tolist() == [1, 2]
    with pytest.raises(ValueError):
        inner_edges([1], 3)

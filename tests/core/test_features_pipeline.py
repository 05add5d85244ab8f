"""One feature implementation: training over a series equals serving snapshot by snapshot, and no look-ahead."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_ml.core.codec import Snapshot
from spark_ml.core.features import FEATURE_NAMES, WARMUP, FeatureStore, series_features
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.sources import load_builtin
from spark_ml.core.ml.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="module")
def eurusd() -> Dataset:
    return load_builtin("eurusd")


def _copy(snaps: tuple[Snapshot, ...] | list[Snapshot]) -> list[Snapshot]:
    """Fresh snapshot objects, so that a test can change them without touching the cached dataset."""
    return [Snapshot(s.ts, s.mid, s.symbol, spread_bp=s.spread_bp, vol1m=s.vol1m) for s in snaps]


def test_series_equals_streaming_on_eurusd(eurusd: Dataset) -> None:
    # Given the same bars fed to the serving store one by one, interleaved with another symbol's bars
    store = FeatureStore()
    other = [Snapshot(i, 1.0 + (i % 13) * 0.01, "OTHER", vol1m=float(i)) for i in range(500)]
    streamed = []
    for i, snap in enumerate(_copy(eurusd.snapshots)):
        if i < len(other):
            store.update(other[i])
        streamed.append(store.update(snap))
    # Then every vector is identical to the batch computation used for training (not merely close)
    batch = series_features(_copy(eurusd.snapshots))
    assert np.array_equal(np.asarray(streamed), batch)
    assert np.array_equal(batch, eurusd.features)
    assert batch.shape == (len(eurusd.snapshots), len(FEATURE_NAMES))


def test_series_equals_streaming_on_synthetic() -> None:
    ds = generate(SyntheticConfig(n_bars=600, seed=3))
    store = FeatureStore()
    streamed = np.asarray([store.update(s) for s in _copy(ds.snapshots)])
    assert np.array_equal(streamed, ds.features)


def test_peek_leaves_state_and_matches_update(eurusd: Dataset) -> None:
    store = FeatureStore()
    snaps = _copy(eurusd.snapshots[:200])
    for s in snaps[:-1]:
        store.update(s)
    peeked = store.peek(snaps[-1])
    assert peeked == store.peek(snaps[-1])
    assert peeked == store.update(snaps[-1])


@functools.cache
def _eurusd_head() -> tuple[Snapshot, ...]:
    return load_builtin("eurusd").snapshots[:400]


@given(
    cut=st.integers(min_value=1, max_value=399),
    factors=st.lists(st.floats(min_value=0.5, max_value=2.0), min_size=1, max_size=50),
    vol=st.floats(min_value=0.0, max_value=1e9),
)
def test_no_look_ahead(cut: int, factors: list[float], vol: float) -> None:
    # Given a series and a copy whose bars from `cut` on are perturbed (price, spread and volume)
    base = _eurusd_head()
    changed = _copy(base)
    for j, s in enumerate(changed[cut:]):
        s.mid *= factors[j % len(factors)]
        s.spread_bp = (j % 7) * 1.5
        s.vol1m = vol
    # Then no feature row before `cut` changes
    a = series_features(_copy(base))
    b = series_features(changed)
    assert np.array_equal(a[:cut], b[:cut])


def test_warmup_rows_become_warm(eurusd: Dataset) -> None:
    # After WARMUP updates the MACD signal line is live, so the row is no longer the neutral placeholder.
    x = eurusd.features
    assert x[WARMUP - 1, FEATURE_NAMES.index("macd_signal")] != 0.0
    assert np.isfinite(x).all()

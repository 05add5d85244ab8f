"""The C kernel (core/_featkernel.c) against the Python :class:`SymbolState`: equal bit for bit, same errors.

The kernel is optional at install time (no compiler, no kernel), but this repository's CI and every
machine we run on build it, so its absence here is a failure: the stream would silently run slower.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from spark_ml.core.codec import Snapshot
from spark_ml.core.errors import InvalidInput
from spark_ml.core.features import KERNEL, FeatureStore, SymbolState, new_state, series_features
from spark_ml.core.ml.sources import load
from tests.support.featseries import bits, run, series


def _kernel_state() -> object:
    from spark_ml.core.features import _featkernel

    return _featkernel.SymbolState()


def test_the_kernel_is_built_and_used() -> None:
    assert KERNEL == "c", "spark_ml.core.features._featkernel was not built: run `pip install -e .` with a C compiler"
    assert type(new_state()).__module__ == "spark_ml.core.features._featkernel"


@pytest.mark.parametrize("name", ["eurusd", "goog", "btcusd"])
def test_equal_on_real_series(name: str) -> None:
    snaps = load(name).snapshots
    assert len(snaps) > 150  # BTCUSD ships monthly bars
    c, py = new_state(), SymbolState()
    for i, snap in enumerate(snaps):
        got, want = c.update(snap), py.update(snap)
        assert bits(got) == bits(want), (i, got, want)
    assert (c.n, c.last_ts) == (py.n, py.last_ts)


@settings(max_examples=300, deadline=None)
@given(snaps=series())
def test_equal_on_any_series(snaps: list[Snapshot]) -> None:
    assert run(_kernel_state(), snaps) == run(SymbolState(), snaps)


def test_out_of_order_is_the_same_invalid_input() -> None:
    c = new_state()
    c.update(Snapshot(2000, 1.1, "EURUSD"))
    with pytest.raises(InvalidInput) as info:
        c.update(Snapshot(1999, 1.1, "EURUSD"))
    py = SymbolState()
    py.update(Snapshot(2000, 1.1, "EURUSD"))
    with pytest.raises(InvalidInput) as want:
        py.update(Snapshot(1999, 1.1, "EURUSD"))
    assert (info.value.code, str(info.value)) == (want.value.code, str(want.value))
    assert info.value.code == "out_of_order"
    assert (c.n, c.last_ts) == (1, 2000)


def test_clone_and_peek_leave_the_state_alone() -> None:
    snaps = load("eurusd").snapshots[:200]
    a = new_state()
    for s in snaps[:120]:
        a.update(s)
    b = a.clone()
    nxt = snaps[120]
    assert a.peek(nxt) == b.update(nxt)
    assert a.n == 120 and b.n == 121
    rest = snaps[121:]
    a.update(nxt)
    assert [a.update(s) for s in rest] == [b.update(s) for s in rest]


def test_store_and_series_use_the_kernel() -> None:
    snaps = load("eurusd").snapshots[:300]
    store = FeatureStore()
    rows = [store.update(s) for s in snaps]
    py = SymbolState()
    assert rows == [py.update(s) for s in snaps]
    assert series_features(snaps).tolist() == rows


def test_no_arguments_and_no_ts_beyond_64_bits() -> None:
    from spark_ml.core.features import _featkernel

    with pytest.raises(TypeError):
        _featkernel.SymbolState(1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="64 bits"):
        new_state().update(Snapshot(2**70, 1.0, "S"))

"""A refused snapshot leaves its symbol's feature state as it was (the C kernel, its Python twin, the reference).

Before, a price of 1e300 in a series around 100 was refused as ``non_finite_features`` after it had been folded
into the rolling windows: the next 38 valid snapshots of the symbol were refused too and its RSI stayed frozen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from spark_ml.core.codec import Snapshot
from spark_ml.core.engine import Engine
from spark_ml.core.features import FeatureStore, ReferenceState, SymbolState, new_state
from spark_ml.core.models import BaselineModel

STATES: dict[str, Callable[[], object]] = {"kernel": new_state, "python": SymbolState, "reference": ReferenceState}


def _series(n: int, *, start: int = 0) -> list[Snapshot]:
    return [Snapshot(1000 + start + i, 100.0 + math.sin((start + i) / 3.0), "S", 1.0, 1e6, None) for i in range(n)]


def _warm_pair(kind: str, n: int) -> tuple[Any, Any]:
    """Two states of one kind that saw the same ``n`` snapshots."""
    state, twin = STATES[kind](), STATES[kind]()
    for snap in _series(n):
        state.update(snap)  # type: ignore[attr-defined]
        twin.update(snap)  # type: ignore[attr-defined]
    return state, twin


@pytest.mark.parametrize("kind", sorted(STATES))
def test_a_refused_snapshot_leaves_the_state_as_it_was(kind: str) -> None:
    # Given a warm state, and a twin that never sees the extreme price
    state, twin = _warm_pair(kind, 60)
    # When a price of 1e300 arrives (its squares overflow the Bollinger window)
    with pytest.raises(FloatingPointError, match="features are not finite"):
        state.update(Snapshot(1060, 1e300, "S", 1.0, 1e6, None))
    # Then the state is untouched: the next snapshots give the twin's rows exactly
    assert (state.n, state.last_ts) == (twin.n, twin.last_ts)
    for snap in _series(40, start=61):
        assert state.update(snap) == twin.update(snap)


@pytest.mark.parametrize("kind", sorted(STATES))
def test_an_error_half_way_leaves_the_state_as_it_was(kind: str) -> None:
    state, twin = _warm_pair(kind, 30)
    # vol1m <= -1 fails in log1p after every indicator was advanced
    with pytest.raises(ValueError):
        state.update(Snapshot(1030, 101.0, "S", 1.0, -2.0, None))
    for snap in _series(10, start=31):
        assert state.update(snap) == twin.update(snap)


def test_the_engine_refuses_one_snapshot_and_predicts_the_next() -> None:
    engine = Engine(BaselineModel(), features=FeatureStore())
    clean = Engine(BaselineModel(), features=FeatureStore())
    warm = _series(60)
    engine.run_batch(warm)
    clean.run_batch(warm)
    bad = Snapshot(1060, 1e300, "S", 1.0, 1e6, None)
    after = _series(40, start=61)

    got = engine.run_batch([bad, *after])
    want = clean.run_batch(after)

    assert [(s.ts, e.code) for s, e in got.rejected] == [(1060, "non_finite_features")]
    assert [s.ts for s in got.snaps] == [s.ts for s in after]
    np.testing.assert_array_equal(got.full, want.full)
    rsi = got.full[:, 3]
    assert len(set(rsi.tolist())) > 10  # the RSI moves: it is not frozen

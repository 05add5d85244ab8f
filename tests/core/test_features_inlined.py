"""The inlined :class:`SymbolState` against the composed :class:`ReferenceState`: equal bit for bit."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from spark_ml.core.codec import Snapshot
from spark_ml.core.features import ReferenceState, SymbolState
from spark_ml.core.ml.sources import load


def _same(a: list[float], b: list[float]) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def test_equal_on_real_eurusd() -> None:
    ds = load("eurusd")
    snaps = ds.snapshots
    assert len(snaps) > 1000
    fast, ref = SymbolState(), ReferenceState()
    for i, snap in enumerate(snaps):
        got, want = fast.update(snap), ref.update(snap)
        assert got == want, (i, got, want)


_mid = st.one_of(
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False),
)
_opt = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False))


@settings(max_examples=150, deadline=None)
@given(
    mids=st.lists(_mid, min_size=1, max_size=90),
    spread=_opt,
    vol=_opt,
    rsi=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
    flat=st.booleans(),
)
def test_equal_on_any_series(
    mids: list[float], spread: float | None, vol: float | None, rsi: float | None, flat: bool
) -> None:
    if flat:  # flat stretches exercise the zero-variance and zero-change branches
        mids = [mids[0]] * len(mids)
    fast, ref = SymbolState(), ReferenceState()
    for i, mid in enumerate(mids):
        snap = Snapshot(1000 + i, mid, "S", spread, vol, rsi if i % 3 == 0 else None)
        got, want = _outcome(fast, snap), _outcome(ref, snap)
        assert got == want or (isinstance(got, list) and isinstance(want, list) and _same(got, want)), (i, got, want)
        assert (fast.n, fast.last_ts) == (ref.n, ref.last_ts), i


def _outcome(state: SymbolState | ReferenceState, snap: Snapshot) -> list[float] | tuple[str, str]:
    """The row, or the refusal's type and text (extreme prices overflow the windows: both refuse alike)."""
    try:
        return state.update(snap)
    except ArithmeticError as exc:
        return type(exc).__name__, str(exc)


def test_clone_is_independent_and_equal() -> None:
    snaps = load("eurusd").snapshots[:200]
    a = SymbolState()
    for s in snaps[:120]:
        a.update(s)
    b = a.clone()
    rest = snaps[120:]
    assert [a.update(s) for s in rest] == [b.update(s) for s in rest]
    c = a.clone()
    c.update(Snapshot(snaps[-1].ts + 1, 2.0, "S"))
    assert a.update(Snapshot(snaps[-1].ts + 1, 1.5, "S")) != c.update(Snapshot(snaps[-1].ts + 2, 1.5, "S"))

"""Snapshot series for the tests that hold the C kernel and the Python :class:`SymbolState` to each other.

:func:`series` draws a series that may hold anything a Snapshot built in code can (the parser refuses most
of it, the kernel must not care); :func:`run` records, per snapshot, the row's bits or the exception, so two
implementations compare with ``==``.
"""

from __future__ import annotations

import math
import struct

from hypothesis import strategies as st

from spark_ml.core.codec import Snapshot

__all__ = ["bits", "run", "series"]

_mid = st.one_of(
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.floats(min_value=5e-324, max_value=1.7e308, allow_nan=False, allow_infinity=False),
)
_opt = st.one_of(st.none(), st.floats(), st.just(-0.0), st.just(-1.0), st.integers(-5, 5))


def bits(row: list[float]) -> list[bytes]:
    """Exact bit patterns (so -0.0 != 0.0), except that every NaN is one NaN.

    x86 arithmetic makes NaNs whose sign bit depends on the instruction that made them (inf - inf is
    negative, a NaN carried through sqrt keeps its own); no stage reads a NaN's sign (the engine refuses
    non-finite rows), so only NaN-ness has to match.
    """
    return [b"nan" if math.isnan(x) else struct.pack("<d", float(x)) for x in row]


def run(state: object, snaps: list[Snapshot]) -> list[object]:
    """Per snapshot: the row's bits, or the exception's type and text (and the state's n after it)."""
    out: list[object] = []
    for snap in snaps:
        try:
            out.append(bits(state.update(snap)))  # type: ignore[attr-defined]
        except Exception as exc:  # the comparison is the point: same type, same message
            out.append((type(exc).__name__, str(exc), getattr(exc, "code", None)))
        out.append((state.n, state.last_ts))  # type: ignore[attr-defined]
    return out


@st.composite
def series(draw: st.DrawFn) -> list[Snapshot]:
    """Up to 90 snapshots of one symbol: odd mids, optional fields of any value, one step back in time."""
    mids = draw(
        st.lists(st.one_of(_mid, st.sampled_from([math.nan, math.inf, -1.0, 0.0, -0.0])), min_size=1, max_size=90)
    )
    spread, vol, rsi = draw(_opt), draw(_opt), draw(st.one_of(st.none(), st.floats()))
    if draw(st.booleans()):  # flat stretches exercise the zero-variance and zero-change branches
        mids = [mids[0]] * len(mids)
    back = draw(st.integers(0, 89))
    return [
        Snapshot(1000 + i - (5 if i == back else 0), mid, "S", spread, vol, rsi if i % 3 == 0 else None)
        for i, mid in enumerate(mids)
    ]

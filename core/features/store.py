"""Per-symbol feature states for serving, and the feature matrix of a series for training."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.codec import Snapshot
from spark_ml.core.features.fast import SymbolState
from spark_ml.core.features.spec import N_FEATURES, out_of_order

__all__ = ["KERNEL", "FeatureState", "FeatureStore", "new_state", "series_features"]


class FeatureState(Protocol):
    """What the store needs of a symbol's state: :class:`SymbolState` or its C twin."""

    @property
    def last_ts(self) -> int: ...

    @property
    def n(self) -> int: ...

    def update(self, snap: Snapshot) -> list[float]: ...

    def peek(self, snap: Snapshot) -> list[float]: ...


def _kernel() -> tuple[Callable[[], FeatureState], str]:
    """The C twin of :class:`SymbolState` when it was built (setup.py), else the Python class."""
    try:
        from spark_ml.core.features import _featkernel
    except ImportError:
        return SymbolState, "python"
    _featkernel.set_out_of_order(out_of_order)
    return _featkernel.SymbolState, "c"


new_state, KERNEL = _kernel()
"""``new_state()`` makes an empty state; ``KERNEL`` says which implementation ("c" or "python")."""


class FeatureStore:
    """Per-symbol states, at most ``max_symbols`` of them (least recently seen evicted first).

    Args:
        max_symbols: bound on tracked symbols, so hostile traffic with random symbols cannot grow memory.
    """

    def __init__(self, *, max_symbols: int = 10_000) -> None:
        self.max_symbols = max_symbols
        self._states: OrderedDict[str, FeatureState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._states

    def state(self, symbol: str) -> FeatureState:
        states = self._states
        st = states.get(symbol)
        if st is None:
            st = states[symbol] = new_state()
            if len(states) > self.max_symbols:
                states.popitem(last=False)
        else:
            states.move_to_end(symbol)
        return st

    def update(self, snap: Snapshot) -> list[float]:
        return self.state(snap.symbol).update(snap)

    def peek(self, snap: Snapshot) -> list[float]:
        st = self._states.get(snap.symbol)
        return (st or new_state()).peek(snap)


def series_features(snaps: Iterable[Snapshot]) -> NDArray[np.float64]:
    """Feature matrix of a single-symbol series, row i computed from snapshots 0..i only."""
    st = new_state()
    rows = [st.update(s) for s in snaps]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), N_FEATURES)

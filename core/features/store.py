"""Per-symbol feature states for serving, and the feature matrix of a series for training."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.codec import Snapshot
from spark_ml.core.features.fast import SymbolState
from spark_ml.core.features.layout import StateTuple
from spark_ml.core.features.spec import N_FEATURES, out_of_order

if TYPE_CHECKING:
    from spark_ml.core.features import _featkernel

__all__ = ["KERNEL", "FeatureState", "FeatureStore", "new_state", "restore_state", "series_features"]


FeatureState: TypeAlias = "SymbolState | _featkernel.SymbolState"
"""A symbol's state as the store holds it: :class:`SymbolState` or its C twin (the same methods, checked on both)."""


def _kernel() -> tuple[Callable[[], FeatureState], Callable[[Sequence[Any]], FeatureState], str]:
    """The C twin of :class:`SymbolState` when it was built (setup.py), else the Python class."""
    try:
        from spark_ml.core.features import _featkernel
    except ImportError:
        return SymbolState, SymbolState.from_state, "python"
    _featkernel.set_out_of_order(out_of_order)
    return _featkernel.SymbolState, _featkernel.SymbolState.from_state, "c"


new_state, restore_state, KERNEL = _kernel()
"""``new_state()`` makes an empty state, ``restore_state(t)`` one from the portable layout
(:mod:`~spark_ml.core.features.layout`, ValueError when ``t`` is not one); ``KERNEL`` says which
implementation ("c" or "python")."""


class FeatureStore:
    """Per-symbol states, at most ``max_symbols`` of them (least recently seen evicted first).

    Args:
        max_symbols: bound on tracked symbols, so hostile traffic with random symbols cannot grow memory.
    """

    def __init__(self, *, max_symbols: int = 10_000) -> None:
        self.max_symbols = max_symbols
        self._states: OrderedDict[str, FeatureState] = OrderedDict()
        self.on_forget: Callable[[list[str]], None] | None = None
        """Called with the symbols whose history in this store ends: dropped, or replaced by a restored
        state (a partition moved). Live quality forgets their pending predictions then."""

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

    def symbols(self) -> list[str]:
        """The symbols with a state, least recently seen first."""
        return list(self._states)

    def export(self, symbols: Iterable[str]) -> dict[str, StateTuple]:
        """The states of those of ``symbols`` this store holds, in the portable layout (for a checkpoint)."""
        states = self._states
        return {sym: st.to_state() for sym in symbols if (st := states.get(sym)) is not None}

    def restore(self, states: Mapping[str, Sequence[Any]]) -> None:
        """Replace (or add) the states of the given symbols by these, in the portable layout.

        All or nothing: every state is read before any is stored, so a bad one (ValueError) changes nothing.
        Restored symbols count as just seen; past ``max_symbols`` the least recently seen are evicted.
        """
        restored = {sym: restore_state(t) for sym, t in states.items()}
        for sym, st in restored.items():
            self._states[sym] = st
            self._states.move_to_end(sym)
        while len(self._states) > self.max_symbols:
            self._states.popitem(last=False)
        if self.on_forget is not None:
            self.on_forget(list(restored))

    def drop(self, symbols: Iterable[str]) -> None:
        """Forget the states of ``symbols`` (a partition that moved to another worker)."""
        gone = list(symbols)
        for sym in gone:
            self._states.pop(sym, None)
        if self.on_forget is not None:
            self.on_forget(gone)


def series_features(snaps: Iterable[Snapshot]) -> NDArray[np.float64]:
    """Feature matrix of a single-symbol series, row i computed from snapshots 0..i only."""
    st = new_state()
    rows = [st.update(s) for s in snaps]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), N_FEATURES)

"""The feature vector: one implementation for training (a whole series) and serving (snapshot by snapshot).

:class:`SymbolState` holds one symbol's streaming indicators; :meth:`SymbolState.update` turns the next
snapshot into the full vector named by :data:`FEATURE_NAMES`. Training runs the same ``update`` over a
series (:func:`series_features`), so there is no second implementation to drift from the first.

Units are chosen so that one model works across price levels: returns, volatility and MACD are in
basis points of the mid, bandwidth in basis points of the middle band. During warm-up (the first
:data:`WARMUP` updates of a symbol) indicators report neutral values; training drops those rows.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from core.codec import Snapshot
from core.errors import InvalidInput
from core.indicators import Bollinger, Macd, RollingWindow, WilderRsi

__all__ = [
    "FEATURE_NAMES",
    "N_FEATURES",
    "WARMUP",
    "FeatureStore",
    "SymbolState",
    "series_features",
]

FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "vol_20",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_pctb",
    "bb_width",
    "spread_bp",
    "log_vol",
)
N_FEATURES = len(FEATURE_NAMES)
WARMUP = 35
"""Updates before every indicator is warm: MACD needs 26 prices and its signal 9 more."""
_BP = 1e4


class SymbolState:
    """Streaming indicator state of one symbol."""

    __slots__ = ("_bb", "_logs", "_macd", "_rets", "_rsi", "last_ts", "n")

    def __init__(self) -> None:
        self._logs: list[float] = []
        self._rets = RollingWindow(20)
        self._rsi = WilderRsi(14)
        self._macd = Macd(12, 26, 9)
        self._bb = Bollinger(20, 2.0)
        self.last_ts = -1
        self.n = 0

    def update(self, snap: Snapshot) -> list[float]:
        """Fold the next snapshot into the state and return its feature vector (in FEATURE_NAMES order)."""
        if snap.ts < self.last_ts:
            raise InvalidInput(
                f"ts {snap.ts} is older than the last snapshot of {snap.symbol} ({self.last_ts})", code="out_of_order"
            )
        mid = snap.mid
        # Log prices, not price ratios: a ratio of two extreme prices can underflow to 0.
        logs = self._logs
        log_mid = math.log(mid)
        ret_1 = (log_mid - logs[-1]) * _BP if logs else 0.0
        ret_5 = (log_mid - logs[0]) * _BP if len(logs) == 5 else 0.0
        logs.append(log_mid)
        if len(logs) > 5:
            del logs[0]
        if self.n:
            self._rets.update(ret_1)
        rsi = self._rsi.update(mid)
        if snap.rsi14 is not None:
            rsi = snap.rsi14
        macd, signal, hist = self._macd.update(mid)
        pctb, width = self._bb.update(mid)
        self.last_ts = snap.ts
        self.n += 1
        scale = _BP / mid
        return [
            ret_1,
            ret_5,
            self._rets.std(),
            rsi,
            macd * scale,
            signal * scale,
            hist * scale,
            pctb,
            width * _BP,
            snap.spread_bp or 0.0,
            math.log1p(snap.vol1m) if snap.vol1m else 0.0,
        ]

    def clone(self) -> SymbolState:
        """An independent copy (explicit: ``copy.deepcopy`` costs two orders of magnitude more)."""
        new = SymbolState.__new__(SymbolState)
        new._logs = self._logs.copy()
        new._rets, new._rsi, new._macd, new._bb = (
            self._rets.clone(),
            self._rsi.clone(),
            self._macd.clone(),
            self._bb.clone(),
        )
        new.last_ts, new.n = self.last_ts, self.n
        return new

    def peek(self, snap: Snapshot) -> list[float]:
        """The vector ``update`` would return, leaving this state untouched (for request-reply)."""
        return self.clone().update(snap)


class FeatureStore:
    """Per-symbol states, at most ``max_symbols`` of them (least recently seen evicted first).

    Args:
        max_symbols: bound on tracked symbols, so hostile traffic with random symbols cannot grow memory.
    """

    def __init__(self, *, max_symbols: int = 10_000) -> None:
        self.max_symbols = max_symbols
        self._states: OrderedDict[str, SymbolState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._states

    def state(self, symbol: str) -> SymbolState:
        states = self._states
        st = states.get(symbol)
        if st is None:
            st = states[symbol] = SymbolState()
            if len(states) > self.max_symbols:
                states.popitem(last=False)
        else:
            states.move_to_end(symbol)
        return st

    def update(self, snap: Snapshot) -> list[float]:
        return self.state(snap.symbol).update(snap)

    def peek(self, snap: Snapshot) -> list[float]:
        st = self._states.get(snap.symbol)
        return (st or SymbolState()).peek(snap)


def series_features(snaps: Iterable[Snapshot]) -> NDArray[np.float64]:
    """Feature matrix of a single-symbol series, row i computed from snapshots 0..i only."""
    st = SymbolState()
    rows = [st.update(s) for s in snaps]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), N_FEATURES)

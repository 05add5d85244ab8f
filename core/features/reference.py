"""The feature vector composed from the indicator classes: the readable definition of every feature."""

from __future__ import annotations

import copy
import math

from spark_ml.core.codec import Snapshot
from spark_ml.core.features.indicators import Bollinger, Macd, RollingWindow, WilderRsi
from spark_ml.core.features.spec import BP as _BP
from spark_ml.core.features.spec import AllOrNothing
from spark_ml.core.features.spec import out_of_order as _out_of_order

__all__ = ["ReferenceState"]


class ReferenceState(AllOrNothing):
    """The feature vector composed from the indicator classes: the readable definition.

    :class:`SymbolState` computes the same numbers, bit for bit, with the indicators inlined (the stream
    calls it for every snapshot); ``tests/core/test_features_inlined.py`` holds the two together.
    """

    __slots__ = ("_bb", "_logs", "_macd", "_rets", "_rsi", "last_ts", "n")

    def __init__(self) -> None:
        self._logs: list[float] = []
        self._rets = RollingWindow(20)
        self._rsi = WilderRsi(14)
        self._macd = Macd(12, 26, 9)
        self._bb = Bollinger(20, 2.0)
        self.last_ts = -1
        self.n = 0

    def _copy(self) -> ReferenceState:
        return copy.deepcopy(self)

    def _fold(self, snap: Snapshot) -> list[float]:
        if snap.ts < self.last_ts:
            raise _out_of_order(snap, self.last_ts)
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

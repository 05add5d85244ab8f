"""The feature vector with every indicator inlined into flat slots: what the stream runs per snapshot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from spark_ml.core.codec import Snapshot
from spark_ml.core.features.layout import StateTuple, check_state
from spark_ml.core.features.spec import BP as _BP
from spark_ml.core.features.spec import AllOrNothing
from spark_ml.core.features.spec import out_of_order as _out_of_order

__all__ = ["SymbolState"]

_W = 20
"""Window of the return volatility and of the Bollinger bands."""
_A_RSI = 1.0 / 14.0
_A_FAST = 2.0 / (12 + 1.0)
_A_SLOW = 2.0 / (26 + 1.0)
_A_SIGNAL = 2.0 / (9 + 1.0)
_SLOW = 26
_BB_K = 2.0


class SymbolState(AllOrNothing):
    """Streaming indicator state of one symbol, flattened into slots (the stream's hot path).

    Same numbers as :class:`ReferenceState` (the indicator classes composed), with every indicator
    inlined: method calls and small objects were most of the per-snapshot cost. The two rolling windows
    keep their sums relative to a reference value and recompute them once per turn of the ring, exactly
    as :class:`~spark_ml.core.features.indicators.RollingWindow` does.
    """

    __slots__ = (
        "_b_i",
        "_b_ref",
        "_b_s",
        "_b_sq",
        "_b_vals",
        "_dn",
        "_fast",
        "_last",
        "_logs",
        "_r_i",
        "_r_ref",
        "_r_s",
        "_r_sq",
        "_r_vals",
        "_signal",
        "_slow",
        "_up",
        "last_ts",
        "n",
    )

    def __init__(self) -> None:
        self._logs: list[float] = []
        self._r_vals = [0.0] * _W
        self._r_i = 0
        self._r_ref = self._r_s = self._r_sq = 0.0
        self._b_vals = [0.0] * _W
        self._b_i = 0
        self._b_ref = self._b_s = self._b_sq = 0.0
        self._up = self._dn = 0.0
        self._last = 0.0
        self._fast = self._slow = self._signal = 0.0
        self.last_ts = -1
        self.n = 0

    def _copy(self) -> SymbolState:
        return self.clone()

    def _fold(self, snap: Snapshot) -> list[float]:  # noqa: C901 - one flat function is the point
        if snap.ts < self.last_ts:
            raise _out_of_order(snap, self.last_ts)
        mid = snap.mid
        n = self.n
        logs = self._logs
        log_mid = math.log(mid)
        if n:
            ret_1 = (log_mid - logs[-1]) * _BP
            ret_5 = (log_mid - logs[0]) * _BP if len(logs) == 5 else 0.0
            logs.append(log_mid)
            if len(logs) > 5:
                del logs[0]
            # Rolling std of returns: the window holds the returns after the first snapshot (count = n).
            vals = self._r_vals
            i = self._r_i
            if n == 1:
                self._r_ref = ref = ret_1
            else:
                ref = self._r_ref
            s, sq = self._r_s, self._r_sq
            if n > _W:
                old = vals[i] - ref
                s -= old
                sq -= old * old
            vals[i] = ret_1
            d = ret_1 - ref
            s += d
            sq += d * d
            i += 1
            if i == _W:
                i = 0
                if n >= _W:
                    ref = self._r_ref = sum(vals) / _W
                    s = sum(v - ref for v in vals)
                    sq = sum((v - ref) * (v - ref) for v in vals)
            self._r_i, self._r_s, self._r_sq = i, s, sq
            k = n if n < _W else _W
            if k < 2:
                vol = 0.0
            else:
                m = s / k
                vol = math.sqrt(max(sq / k - m * m, 0.0))
            # Wilder RSI: both averages start at 0 (the first bar is a zero change).
            change = mid - self._last
            up = self._up
            dn = self._dn
            up += _A_RSI * ((change if change > 0.0 else 0.0) - up)
            dn += _A_RSI * ((-change if change < 0.0 else 0.0) - dn)
            self._up, self._dn = up, dn
            if dn == 0.0:
                rsi = 100.0 if up > 0.0 else 50.0
            else:
                rsi = 100.0 - 100.0 / (1.0 + up / dn)
            fast = self._fast
            fast += _A_FAST * (mid - fast)
            slow = self._slow
            slow += _A_SLOW * (mid - slow)
            self._fast, self._slow = fast, slow
        else:
            ret_1 = ret_5 = vol = 0.0
            logs.append(log_mid)
            rsi = 50.0
            self._fast = self._slow = fast = slow = mid
        self._last = mid
        if snap.rsi14 is not None:
            rsi = snap.rsi14
        count = n + 1
        if count < _SLOW:
            macd = signal = hist = 0.0
        else:
            macd = fast - slow
            if count == _SLOW:
                signal = self._signal = macd
            else:
                signal = self._signal
                signal += _A_SIGNAL * (macd - signal)
                self._signal = signal
            hist = macd - signal
        # Bollinger bands over the last _W mids.
        vals = self._b_vals
        i = self._b_i
        if n == 0:
            self._b_ref = ref = mid
        else:
            ref = self._b_ref
        s, sq = self._b_s, self._b_sq
        if n >= _W:
            old = vals[i] - ref
            s -= old
            sq -= old * old
        vals[i] = mid
        d = mid - ref
        s += d
        sq += d * d
        i += 1
        if i == _W:
            i = 0
            if count >= _W:
                ref = self._b_ref = sum(vals) / _W
                s = sum(v - ref for v in vals)
                sq = sum((v - ref) * (v - ref) for v in vals)
        self._b_i, self._b_s, self._b_sq = i, s, sq
        pctb, width = 0.5, 0.0
        if count >= _W:
            mean = ref + s / _W
            m = s / _W
            half = _BB_K * math.sqrt(max(sq / _W - m * m, 0.0))
            if not half <= 0.0:  # written so, as in Bollinger: a NaN half goes on to NaN features
                pctb = (mid - (mean - half)) / (2.0 * half)
                width = 2.0 * half / mean
        self.last_ts = snap.ts
        self.n = count
        scale = _BP / mid
        vol1m = snap.vol1m
        return [
            ret_1,
            ret_5,
            vol,
            rsi,
            macd * scale,
            signal * scale,
            hist * scale,
            pctb,
            width * _BP,
            snap.spread_bp or 0.0,
            math.log1p(vol1m) if vol1m else 0.0,
        ]

    def clone(self) -> SymbolState:
        """An independent copy (explicit: ``copy.deepcopy`` costs two orders of magnitude more)."""
        new = SymbolState.__new__(SymbolState)
        for name in _SCALARS:
            setattr(new, name, getattr(self, name))
        new._logs = self._logs.copy()
        new._r_vals = self._r_vals.copy()
        new._b_vals = self._b_vals.copy()
        return new

    def peek(self, snap: Snapshot) -> list[float]:
        """The vector ``update`` would return, leaving this state untouched (for request-reply)."""
        return self.clone().update(snap)

    def to_state(self) -> StateTuple:
        """The state in the portable layout of :mod:`~spark_ml.core.features.layout` (the C kernel reads it)."""
        return (
            tuple(map(float, self._logs)),
            tuple(map(float, self._r_vals)),
            self._r_i,
            float(self._r_ref),
            float(self._r_s),
            float(self._r_sq),
            tuple(map(float, self._b_vals)),
            self._b_i,
            float(self._b_ref),
            float(self._b_s),
            float(self._b_sq),
            float(self._up),
            float(self._dn),
            float(self._last),
            float(self._fast),
            float(self._slow),
            float(self._signal),
            self.last_ts,
            self.n,
        )

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> SymbolState:
        """A state from :meth:`to_state`'s layout (its own or the C kernel's); ValueError when it is not one."""
        t = check_state(state)
        new = cls.__new__(cls)
        new._logs = list(t[0])
        new._r_vals = list(t[1])
        new._r_i, new._r_ref, new._r_s, new._r_sq = t[2:6]
        new._b_vals = list(t[6])
        new._b_i, new._b_ref, new._b_s, new._b_sq = t[7:11]
        new._up, new._dn, new._last, new._fast, new._slow, new._signal = t[11:17]
        new.last_ts, new.n = t[17], t[18]
        return new


_SCALARS = tuple(n for n in SymbolState.__slots__ if n not in ("_logs", "_r_vals", "_b_vals"))

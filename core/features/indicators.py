"""Streaming technical indicators, O(1) per update, matching the PyPI package ``ta`` after warm-up.

Each indicator is seeded the way ``ta`` (pandas ``ewm(adjust=False)`` and ``rolling``) seeds it, so the
values agree with ``ta`` to floating-point precision on any series (``tests/core/test_indicators.py``).
The feature vector built from them lives in :mod:`spark_ml.core.features`.
"""

from __future__ import annotations

import math

__all__ = ["Bollinger", "Ema", "Macd", "RollingWindow", "WilderRsi"]


class Ema:
    """Exponential moving average seeded with the first value (pandas ``ewm(span=n, adjust=False)``).

    Args:
        span: the EMA span; alpha is ``2 / (span + 1)``.
        alpha: give alpha directly instead (Wilder smoothing uses ``1 / n``).
    """

    __slots__ = ("alpha", "count", "value")

    def __init__(self, span: int | None = None, *, alpha: float | None = None) -> None:
        if alpha is None:
            if span is None or span < 1:
                raise ValueError("Ema needs span >= 1 or alpha")
            alpha = 2.0 / (span + 1.0)
        self.alpha = alpha
        self.value = 0.0
        self.count = 0

    def clone(self) -> Ema:
        new = Ema.__new__(Ema)
        new.alpha, new.value, new.count = self.alpha, self.value, self.count
        return new

    def update(self, x: float) -> float:
        if self.count == 0:
            self.value = x
        else:
            self.value += self.alpha * (x - self.value)
        self.count += 1
        return self.value


class RollingWindow:
    """Mean and population standard deviation over the last ``size`` values.

    Sums are kept relative to a reference value and recomputed exactly once per full turn of the
    ring, so rounding error never accumulates over a long stream (amortized O(1)).
    """

    __slots__ = ("_i", "_ref", "_s", "_sq", "count", "size", "values")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("RollingWindow size must be >= 1")
        self.size = size
        self.values = [0.0] * size
        self.count = 0
        self._i = 0
        self._ref = 0.0
        self._s = 0.0
        self._sq = 0.0

    def clone(self) -> RollingWindow:
        new = RollingWindow.__new__(RollingWindow)
        new.size, new.values, new.count = self.size, self.values.copy(), self.count
        new._i, new._ref, new._s, new._sq = self._i, self._ref, self._s, self._sq
        return new

    def update(self, x: float) -> None:
        if self.count == 0:
            self._ref = x
        i = self._i
        if self.count >= self.size:
            old = self.values[i] - self._ref
            self._s -= old
            self._sq -= old * old
        self.values[i] = x
        d = x - self._ref
        self._s += d
        self._sq += d * d
        self.count += 1
        i += 1
        if i == self.size:
            i = 0
            if self.count >= self.size:
                self._recompute()
        self._i = i

    def _recompute(self) -> None:
        ref = sum(self.values) / self.size
        self._ref = ref
        self._s = sum(v - ref for v in self.values)
        self._sq = sum((v - ref) * (v - ref) for v in self.values)

    @property
    def full(self) -> bool:
        return self.count >= self.size

    def mean(self) -> float:
        n = min(self.count, self.size)
        return self._ref + self._s / n if n else 0.0

    def std(self) -> float:
        n = min(self.count, self.size)
        if n < 2:
            return 0.0
        m = self._s / n
        return math.sqrt(max(self._sq / n - m * m, 0.0))


class WilderRsi:
    """RSI with Wilder smoothing (alpha ``1/n``), seeded as ``ta.momentum.RSIIndicator`` (a zero first change).

    A flat series (no change at all) reads 50, where ``ta`` reads 100.
    """

    __slots__ = ("_dn", "_last", "_up", "count", "window")

    def __init__(self, window: int = 14) -> None:
        self.window = window
        self._up = Ema(alpha=1.0 / window)
        self._dn = Ema(alpha=1.0 / window)
        self._last: float | None = None
        self.count = 0
        """Number of price changes seen."""

    def clone(self) -> WilderRsi:
        new = WilderRsi.__new__(WilderRsi)
        new.window, new._up, new._dn = self.window, self._up.clone(), self._dn.clone()
        new._last, new.count = self._last, self.count
        return new

    def update(self, price: float) -> float:
        # The first bar counts as a zero change, as in ta (pandas diff() is NaN there and
        # where(diff > 0, 0.0) makes it 0), so both averages are seeded with 0.
        change = 0.0 if self._last is None else price - self._last
        self._up.update(change if change > 0.0 else 0.0)
        self._dn.update(-change if change < 0.0 else 0.0)
        if self._last is not None:
            self.count += 1
        self._last = price
        return self.value()

    @property
    def ready(self) -> bool:
        return self.count >= self.window

    def value(self) -> float:
        """The RSI, 0..100; 50 until the first change."""
        if self.count == 0:
            return 50.0
        dn = self._dn.value
        if dn == 0.0:
            return 100.0 if self._up.value > 0.0 else 50.0
        return 100.0 - 100.0 / (1.0 + self._up.value / dn)


class Macd:
    """MACD(fast, slow, signal) as ``ta.trend.MACD``: the signal EMA starts once the slow EMA is warm."""

    __slots__ = ("_fast", "_signal", "_slow", "count", "slow_window")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self._fast = Ema(fast)
        self._slow = Ema(slow)
        self._signal = Ema(signal)
        self.slow_window = slow
        self.count = 0

    def clone(self) -> Macd:
        new = Macd.__new__(Macd)
        new._fast, new._slow, new._signal = self._fast.clone(), self._slow.clone(), self._signal.clone()
        new.slow_window, new.count = self.slow_window, self.count
        return new

    def update(self, price: float) -> tuple[float, float, float]:
        """Return (macd, signal, histogram); zeros until the slow EMA has ``slow`` values."""
        fast = self._fast.update(price)
        slow = self._slow.update(price)
        self.count += 1
        if self.count < self.slow_window:
            return 0.0, 0.0, 0.0
        macd = fast - slow
        signal = self._signal.update(macd)
        return macd, signal, macd - signal


class Bollinger:
    """Bollinger bands (window, k) with population std, as ``ta.volatility.BollingerBands``."""

    __slots__ = ("_win", "k")

    def __init__(self, window: int = 20, k: float = 2.0) -> None:
        self._win = RollingWindow(window)
        self.k = k

    def clone(self) -> Bollinger:
        new = Bollinger.__new__(Bollinger)
        new._win, new.k = self._win.clone(), self.k
        return new

    def update(self, price: float) -> tuple[float, float]:
        """Return (%B, bandwidth as a fraction of the middle band); (0.5, 0) until the window is full."""
        self._win.update(price)
        if not self._win.full:
            return 0.5, 0.0
        mid = self._win.mean()
        half = self.k * self._win.std()
        if half <= 0.0:
            return 0.5, 0.0
        return (price - (mid - half)) / (2.0 * half), 2.0 * half / mid

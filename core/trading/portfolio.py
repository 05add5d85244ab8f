"""The live portfolio: every symbol's paper account as one book, equal weight unless weights are given.

Each symbol's paper account starts with equity 1 (:mod:`spark_ml.core.trading.live_pnl`). With weights ``w_i``
(1 each by default; with configured weights, symbols not named weigh 0 and are left out):

* ``equity = sum(w_i * equity_i) / sum(w_i)``, and likewise ``pnl``, ``realizedPnl``, ``unrealizedPnl``,
  ``position`` (net, -1..1) and ``grossPosition`` (``sum(w_i * |position_i|) / sum(w_i)``); ``exposure`` is the
  weighted mean of the symbols' exposures; ``trades`` the sum; ``winRate`` the pooled share of winning trades
  (open ones marked to market) and ``profitFactor`` the weighted gross profit over the weighted gross loss.
* **Steps.** The book's returns are taken in data time: a snapshot whose ``ts`` is later than the current
  step's closes the step, and the step's return is ``sum(w_i * equity_i) / (the same sum at the previous close)
  - 1``, so every symbol's moves and costs within one timestamp make one return. A symbol joining adds its
  weight times 1 to both sums: it changes the book's equity but makes no return. The first step (the one the
  book opens in) counts in the index but not in the returns window. The index
  ``prod(1 + r)`` equals the equity as long as no symbol joined or left.
* ``maxDrawdown`` and ``drawdown`` are taken on the index (running peak, the current open step included);
  ``var95``/``var99`` (historical), ``var95Parametric``/``var99Parametric``, ``sharpe`` and ``sortino`` are the
  functions of :mod:`spark_ml.core.trading.analytics` on the last ``var_window`` step returns, annualized by the
  steps per year measured from their timestamps.

Everything is driven by the messages in the order they arrived, never by a clock, so two processes fed the
same messages in the same order hold the same book (which is what lets a standby take over from a checkpoint).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from spark_ml.core.trading import analytics
from spark_ml.core.trading.live_figures import finite_or_none
from spark_ml.core.trading.live_history import EquityCurve
from spark_ml.core.trading.live_pnl import PaperPosition

__all__ = ["Portfolio", "parse_weights"]

_STATE_VERSION = 1


def parse_weights(text: str) -> dict[str, float]:
    """``"EURUSD=0.6,GBPUSD=0.4"`` -> weights (each finite and >= 0, some > 0); ValueError with the reason."""
    out: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        symbol, sep, value = part.strip().rpartition("=")
        if not sep or not symbol:
            raise ValueError(f"weight {part.strip()!r}: expected SYMBOL=WEIGHT")
        try:
            w = float(value)
        except ValueError:
            raise ValueError(f"weight {part.strip()!r}: {value!r} is not a number") from None
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"weight {part.strip()!r}: must be finite and >= 0")
        out[symbol] = w
    if out and not any(out.values()):
        raise ValueError("weights: at least one must be > 0")
    return out


class Portfolio:
    """The book over all symbols (see the module docstring).

    Args:
        weights: per-symbol weights; None or empty: every symbol weighs 1.
        var_window: step returns kept for VaR, Sharpe and Sortino.
        curve_points: points of the book's equity curve at most (even).
    """

    def __init__(
        self, *, weights: Mapping[str, float] | None = None, var_window: int = 500, curve_points: int = 1000
    ) -> None:
        if var_window < 2:
            raise ValueError("var_window must be at least 2")
        self.weights = dict(weights or {})
        self._eq: dict[str, float] = {}
        self._total = 0.0
        """``sum(w_i * equity_i)`` now."""
        self._mark = 0.0
        """The same sum at the last close of a step (with the symbols that joined since)."""
        self._wsum = 0.0
        self._step_ts: int | None = None
        self._closes = 0
        self._rets: deque[float] = deque(maxlen=var_window)
        self._tsw: deque[int] = deque(maxlen=var_window + 1)
        self.index = 1.0
        self.peak = 1.0
        self.max_drawdown = 0.0
        self.curve = EquityCurve(curve_points)

    def weight(self, symbol: str) -> float:
        """The symbol's weight (0: not in the book)."""
        return self.weights.get(symbol, 0.0) if self.weights else 1.0

    def advance(self, ts: int | None) -> None:
        """A snapshot of data time ``ts`` arrived: close the current step first when ``ts`` is later."""
        if ts is None:
            return
        if self._step_ts is None:
            self._step_ts = ts
            return
        if ts <= self._step_ts:
            return
        r = self._total / self._mark - 1.0 if self._mark > 0 else 0.0
        if self._closes:  # the book's first step is the one its symbols joined in: no return of a whole step
            self._rets.append(r)
        self._closes += 1
        self._tsw.append(ts)
        self.index *= 1.0 + r
        self.peak = max(self.peak, self.index)
        self.max_drawdown = max(self.max_drawdown, 1.0 - self.index / self.peak)
        self._mark = self._total
        self.curve.add(self._step_ts, self.equity)
        self._step_ts = ts

    def mark(self, symbol: str, equity: float) -> None:
        """The symbol's equity now (after any snapshot or signal)."""
        w = self.weight(symbol)
        if not w:
            return
        old = self._eq.get(symbol)
        self._eq[symbol] = equity
        if old is None:  # joins: in both sums, so no return
            self._wsum += w
            self._total += w * equity
            self._mark += w * equity
        else:
            self._total += w * (equity - old)

    def drop(self, symbol: str) -> None:
        """The symbol left the book (evicted): out of both sums, no return."""
        old = self._eq.pop(symbol, None)
        if old is None:
            return
        w = self.weight(symbol)
        self._wsum -= w
        self._total -= w * old
        self._mark -= w * old
        if not self._eq:
            self._total = self._mark = self._wsum = 0.0

    @property
    def equity(self) -> float:
        return self._total / self._wsum if self._wsum > 0 else 1.0

    def _index_now(self) -> float:
        return self.index * (self._total / self._mark) if self._mark > 0 else self.index

    def figures(self, positions: Iterable[tuple[str, PaperPosition]]) -> dict[str, Any]:
        """The ``analytics.get`` body of the portfolio (``symbol`` None; see the module docstring)."""
        wsum = realized = unrealized = net = gross = exposure = exposure_w = profit = loss = 0.0
        trades = wins = members = 0
        as_of: int | None = None
        for symbol, pp in positions:
            w = self.weight(symbol)
            if not w:
                continue
            members += 1
            wsum += w
            realized += w * pp.realized
            unrealized += w * pp.unrealized
            net += w * pp.position
            gross += w * abs(pp.position)
            if not math.isnan(pp.exposure):
                exposure += w * pp.exposure
                exposure_w += w
            totals = pp.totals()
            trades += totals.trades
            wins += totals.wins
            profit += w * totals.profit
            loss += w * totals.loss
            if pp.ts is not None and (as_of is None or pp.ts > as_of):
                as_of = pp.ts
        rets = np.fromiter(self._rets, dtype=np.float64, count=len(self._rets))
        periods = self._periods()
        annualize = math.isfinite(periods)
        index_now = self._index_now()
        peak = max(self.peak, index_now)
        if loss > 0:
            pf = profit / loss
        else:
            pf = math.inf if profit > 0 else math.nan
        equity = self.equity
        return {
            "symbol": None,
            "symbols": members,
            "weights": "configured" if self.weights else "equal",
            "asOf": as_of,
            "position": net / wsum if wsum else 0.0,
            "grossPosition": gross / wsum if wsum else 0.0,
            "equity": equity,
            "pnl": equity - 1.0,
            "realizedPnl": realized / wsum if wsum else 0.0,
            "unrealizedPnl": unrealized / wsum if wsum else 0.0,
            "totalReturn": equity - 1.0,
            "index": index_now,
            "drawdown": 1.0 - index_now / peak,
            "maxDrawdown": max(self.max_drawdown, 1.0 - index_now / peak),
            "var95": finite_or_none(analytics.var_historical(rets, 0.95)),
            "var99": finite_or_none(analytics.var_historical(rets, 0.99)),
            "var95Parametric": finite_or_none(analytics.var_parametric(rets, 0.95)),
            "var99Parametric": finite_or_none(analytics.var_parametric(rets, 0.99)),
            "sharpe": finite_or_none(analytics.sharpe(rets, periods)) if annualize else None,
            "sortino": finite_or_none(analytics.sortino(rets, periods)) if annualize else None,
            "winRate": wins / trades if trades else None,
            "profitFactor": finite_or_none(pf),
            "trades": trades,
            "exposure": exposure / exposure_w if exposure_w else None,
            "window": int(rets.size),
        }

    def _periods(self) -> float:
        n, tsw = len(self._rets) + 1, self._tsw
        if n < 2 or len(tsw) < n:
            return math.nan
        try:  # only the ends and the count matter (as in PaperPosition.periods_per_year)
            return analytics.periods_per_year(np.linspace(tsw[-n], tsw[-1], n))
        except ValueError:
            return math.nan

    def export(self, positions: Iterable[tuple[str, PaperPosition]]) -> dict[str, Any]:
        """The ``analytics.export`` body of the portfolio: its figures and equity curve (no trades of its own)."""
        points = self.curve.points()
        if self._step_ts is not None:
            points.append((self._step_ts, self.equity))  # the open step
        return {
            "symbol": None,
            "figures": self.figures(positions),
            "equityCurve": [list(point) for point in points],
            "curveStride": self.curve.stride,
        }

    def state(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return {
            "v": _STATE_VERSION,
            "eq": self._eq,
            "total": self._total,
            "mark": self._mark,
            "wsum": self._wsum,
            "step_ts": self._step_ts,
            "closes": self._closes,
            "rets": list(self._rets),
            "tsw": list(self._tsw),
            "index": self.index,
            "peak": self.peak,
            "max_drawdown": self.max_drawdown,
            "curve": self.curve.state(),
        }

    def restore(self, state: dict[str, Any], symbols: Iterable[str]) -> None:
        """Take a checkpoint back, exactly (the running sums as saved, not summed again); ``symbols`` are those
        restored with it: any other the checkpoint names leaves the book (:meth:`drop`)."""
        if state.get("v") != _STATE_VERSION:
            raise ValueError(f"portfolio state version {state.get('v')!r}, expected {_STATE_VERSION}")
        self._eq = {str(k): float(v) for k, v in state["eq"].items()}
        self._total, self._mark, self._wsum = float(state["total"]), float(state["mark"]), float(state["wsum"])
        self._step_ts = state["step_ts"]
        self._closes = int(state["closes"])
        self._rets.clear()
        self._rets.extend(float(r) for r in state["rets"])
        self._tsw.clear()
        self._tsw.extend(state["tsw"])
        self.index = float(state["index"])
        self.peak = float(state["peak"])
        self.max_drawdown = float(state["max_drawdown"])
        self.curve = EquityCurve.from_state(state["curve"])
        kept = set(symbols)
        for symbol in [s for s in self._eq if s not in kept]:
            self.drop(symbol)

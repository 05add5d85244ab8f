"""Trading analytics over per-bar returns, vectorized with numpy.

Conventions (every function below follows them; ``tests/core/test_analytics.py`` checks each one by hand
and against ``empyrical``):

* **Returns** are simple per-bar returns of a strategy, ``r[k] = equity[k] / equity[k-1] - 1``.
* **Positions** are ``-1`` (short), ``0`` (flat) or ``+1`` (long), and ``positions[k]`` is held over
  ``asset_returns[k]``. Aligning the two without look-ahead is the caller's job (:mod:`spark_ml.core.trading.backtest`
  does it in one place). Entering a position buys (or sells short) units worth the whole equity at that
  price and keeps those units, unrebalanced, until the position changes, as a real order would: a trade
  from price ``p0`` to ``p`` turns equity ``E`` into ``E * (1 + pos * (p / p0 - 1))``. A short that loses
  more than its equity ends at zero.
* **Costs**: changing the position from ``a`` to ``b`` costs ``cost_rate * |b - a|`` of equity, paid at
  the change, before the bar's move: ``1 + r[k] = (1 - cost_rate * |pos[k] - pos[k-1]|) * (1 + g[k])``
  with ``pos[-1] = 0`` and ``g`` the gross return of the units held (:func:`position_returns`). The
  incremental tracker in :mod:`spark_ml.core.trading.live_pnl` follows the same rules.
* **Sharpe** = ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` (risk-free rate 0).
* **Sortino** = ``mean(r) / sqrt(mean(min(r, 0)**2)) * sqrt(periods_per_year)`` (target 0; the
  downside deviation averages over all bars, as empyrical does).
* **Max drawdown** = ``max_k 1 - equity[k] / max(start, equity[0..k])``: a fraction of the peak, 0..1.
* **VaR** at level ``a`` (0.95, 0.99) is a one-bar loss as a positive fraction of equity, floored at 0.
  Historical: ``-quantile(r, 1 - a)`` with numpy's linear interpolation. Parametric (Gaussian):
  ``-(mean(r) + z(1 - a) * std(r, ddof=1))``.
* **Trades** are maximal runs of one non-zero position; a flip from long to short closes one trade and
  opens another. A trade's PnL is the equity it gained or lost, its entry and exit costs included (the
  cost of a flip is split between the two trades in proportion to the position each one moves). The
  trade still open at the end is marked to market (no exit cost): its PnL is the *unrealized* PnL, the
  closed trades' PnL is the *realized* PnL, and the two add up to ``equity[-1] - start``.
* **Win rate** = winning trades / trades (the open one included); **profit factor** = gross profit /
  gross loss over trades (``inf`` with gains and no losses, ``nan`` with no trades at all).
* **Exposure** = fraction of bars with a non-zero position.

Undefined ratios (a Sharpe of a constant series, a win rate without trades) are ``nan``, never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MS_PER_YEAR",
    "Trades",
    "drawdown_series",
    "equity_curve",
    "exposure",
    "max_drawdown",
    "periods_per_year",
    "position_returns",
    "profit_factor",
    "sharpe",
    "sortino",
    "strategy_returns",
    "total_return",
    "trades",
    "turnover",
    "var_historical",
    "var_parametric",
    "win_rate",
]

MS_PER_YEAR = 365.25 * 86_400_000.0

F64 = NDArray[np.float64]


def _arr(x: ArrayLike) -> F64:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def periods_per_year(ts_ms: ArrayLike) -> float:
    """Bars per year measured from the timestamps themselves: ``(n - 1) / span in years``.

    Counting bars rather than dividing a year by the median spacing gets markets with closed hours right:
    EURUSD hourly is about 6,200 bars a year (not 8,766), GOOG daily about 252 (not 365).
    """
    ts = _arr(ts_ms)
    if ts.size < 2 or ts[-1] <= ts[0]:
        raise ValueError("need at least two increasing timestamps to measure the bar frequency")
    return float((ts.size - 1) / ((ts[-1] - ts[0]) / MS_PER_YEAR))


def turnover(positions: ArrayLike) -> F64:
    """``|pos[k] - pos[k-1]|`` with ``pos[-1] = 0``: how much of equity each bar trades."""
    out: F64 = np.asarray(np.abs(np.diff(_arr(positions), prepend=0.0)), dtype=np.float64)
    return out


def _pair(positions: ArrayLike, asset_returns: ArrayLike) -> tuple[F64, F64]:
    pos, ar = _arr(positions), _arr(asset_returns)
    if pos.shape != ar.shape:
        raise ValueError(f"positions {pos.shape} and returns {ar.shape} differ in length")
    if not np.isin(pos, (-1.0, 0.0, 1.0)).all():
        raise ValueError("positions must be -1, 0 or 1")
    if not (np.isfinite(ar).all() and (ar > -1.0).all()):
        raise ValueError("asset returns must be finite and > -1")
    return pos, ar


def position_returns(positions: ArrayLike, asset_returns: ArrayLike) -> F64:
    """Per-bar gross return (before costs) of the units held: fixed from each entry, not rebalanced."""
    pos, ar = _pair(positions, asset_returns)
    if pos.size == 0:
        return np.empty(0)
    prev = np.concatenate(([0.0], pos[:-1]))
    starts = pos != prev
    starts[0] = True
    run = np.cumsum(starts) - 1
    log_through = np.cumsum(np.log1p(ar))  # log growth of the asset through bar k
    log_before = np.concatenate(([0.0], log_through[:-1]))
    base = log_before[starts][run]  # log growth before the run holding bar k began
    # Value of the run's units relative to its entry equity, after bar k and before it.
    now = np.maximum(1.0 + pos * np.expm1(log_through - base), 0.0)
    then = np.maximum(1.0 + pos * np.expm1(log_before - base), 0.0)
    out: F64 = np.divide(now, then, out=np.ones_like(now), where=then > 0.0) - 1.0
    return out


def strategy_returns(positions: ArrayLike, asset_returns: ArrayLike, cost_rate: float = 0.0) -> F64:
    """Per-bar net returns of holding ``positions[k]`` over ``asset_returns[k]``, costs paid on changes."""
    if cost_rate < 0:
        raise ValueError("cost_rate must be >= 0")
    gross = position_returns(positions, asset_returns)
    out: F64 = (1.0 - cost_rate * turnover(positions)) * (1.0 + gross) - 1.0
    return out


def equity_curve(returns: ArrayLike, start: float = 1.0) -> F64:
    """Equity after each bar, ``start * cumprod(1 + r)`` (length ``n``; the start itself is not included)."""
    out: F64 = np.cumprod(1.0 + _arr(returns)) * np.float64(start)
    return out


def total_return(returns: ArrayLike) -> float:
    """Compounded return over the whole series (0 for an empty one)."""
    return float(np.prod(1.0 + _arr(returns)) - 1.0)


def sharpe(returns: ArrayLike, periods: float) -> float:
    """Annualized Sharpe ratio, ``mean / std(ddof=1) * sqrt(periods)``; nan for fewer than 2 bars or std 0."""
    r = _arr(returns)
    if r.size < 2:
        return math.nan
    sd = float(np.std(r, ddof=1))
    if sd == 0.0:
        return math.nan
    return float(np.mean(r)) / sd * math.sqrt(periods)


def sortino(returns: ArrayLike, periods: float) -> float:
    """Annualized Sortino ratio with target 0; ``inf`` when nothing is lost, nan for fewer than 2 bars."""
    r = _arr(returns)
    if r.size < 2:
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    mean = float(np.mean(r))
    if downside == 0.0:
        return math.inf if mean > 0 else math.nan
    return mean / downside * math.sqrt(periods)


def drawdown_series(returns: ArrayLike, start: float = 1.0) -> F64:
    """Drawdown after each bar, ``1 - equity / running peak`` (the start counts as the first peak)."""
    eq = equity_curve(returns, start)
    peak = np.maximum.accumulate(np.concatenate(([start], eq)))[1:]
    out: F64 = 1.0 - eq / peak
    return out


def max_drawdown(returns: ArrayLike) -> float:
    """Largest fall from a running peak as a fraction of that peak, 0..1 (0 for an empty series)."""
    dd = drawdown_series(returns)
    return float(dd.max()) if dd.size else 0.0


def _level(level: float) -> float:
    if not 0.5 < level < 1.0:
        raise ValueError("VaR level must be between 0.5 and 1, e.g. 0.95")
    return level


def var_historical(returns: ArrayLike, level: float = 0.95) -> float:
    """One-bar historical VaR: ``max(0, -quantile(r, 1 - level))``, a positive fraction of equity."""
    r = _arr(returns)
    if r.size == 0:
        return math.nan
    return max(0.0, -float(np.quantile(r, 1.0 - _level(level))))


def var_parametric(returns: ArrayLike, level: float = 0.95) -> float:
    """One-bar Gaussian VaR: ``max(0, -(mean + z(1 - level) * std(ddof=1)))``."""
    r = _arr(returns)
    if r.size < 2:
        return math.nan
    z = NormalDist().inv_cdf(1.0 - _level(level))
    return max(0.0, -(float(np.mean(r)) + z * float(np.std(r, ddof=1))))


def exposure(positions: ArrayLike) -> float:
    """Fraction of bars spent in the market (nan for no bars)."""
    pos = _arr(positions)
    return float(np.mean(pos != 0.0)) if pos.size else math.nan


@dataclass(frozen=True, slots=True)
class Trades:
    """Round trips of a position series.

    Attributes:
        entry: bar index where each trade's position is first held.
        exit: bar index of the first bar after the trade (``n`` for the open one).
        pnl: equity gained by each trade, in units of the starting equity, costs included.
        returns: ``pnl`` over the equity when the trade began (after a flipped trade's exit cost).
        is_open: True for a trade still open after the last bar (at most the last one).
    """

    entry: NDArray[np.int64]
    exit: NDArray[np.int64]
    pnl: F64
    returns: F64
    is_open: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.pnl.size)

    @property
    def realized(self) -> float:
        """PnL of the closed trades."""
        return float(self.pnl[~self.is_open].sum())

    @property
    def unrealized(self) -> float:
        """Mark-to-market PnL of the trade still open (0 when flat at the end)."""
        return float(self.pnl[self.is_open].sum())


def trades(positions: ArrayLike, asset_returns: ArrayLike, cost_rate: float = 0.0, start: float = 1.0) -> Trades:
    """Split a position series into trades and attribute every bar's PnL and every cost to one of them."""
    pos, ar = _pair(positions, asset_returns)
    gross, net = position_returns(pos, ar), strategy_returns(pos, ar, cost_rate)
    n = pos.size
    before = start * np.concatenate(([1.0], np.cumprod(1.0 + net)[:-1])) if n else np.empty(0)
    prev = np.concatenate(([0.0], pos[:-1])) if n else np.empty(0)
    changed = pos != prev
    opens = changed & (pos != 0.0)
    tid = np.cumsum(opens) - 1  # trade id of the position held at each bar (-1 before the first trade)
    n_trades = int(opens.sum())
    empty_i = np.empty(0, dtype=np.int64)
    if n_trades == 0:
        return Trades(empty_i, empty_i, np.empty(0), np.empty(0), np.empty(0, dtype=np.bool_))
    # Currency flows: the entry cost and the bar's market move go to the trade now held; the exit cost of
    # a change goes to the trade held before it (whose id is the previous bar's).
    entry_cost = np.where(changed, before * cost_rate * np.abs(pos), 0.0)
    exit_cost = np.where(changed, before * cost_rate * np.abs(prev), 0.0)
    market = before * (1.0 - cost_rate * np.abs(pos - prev)) * gross
    held = pos != 0.0
    pnl = np.asarray(np.bincount(tid[held], weights=(market - entry_cost)[held], minlength=n_trades), dtype=np.float64)
    closing = changed & (prev != 0.0)
    prev_tid = np.concatenate(([-1], tid[:-1]))
    pnl -= np.bincount(prev_tid[closing], weights=exit_cost[closing], minlength=n_trades)
    entry = np.flatnonzero(opens).astype(np.int64)
    exits = np.flatnonzero(closing).astype(np.int64)
    is_open = np.zeros(n_trades, dtype=np.bool_)
    if held[-1]:
        is_open[-1] = True
        exits = np.concatenate((exits, [n]))
    began = before[entry] * (1.0 - cost_rate * np.abs(prev[entry]))  # after the previous trade's exit cost
    return Trades(entry, exits, pnl, pnl / began, is_open)


def win_rate(trade_pnl: ArrayLike) -> float:
    """Share of trades with a positive PnL (nan without trades)."""
    p = _arr(trade_pnl)
    return float(np.mean(p > 0.0)) if p.size else math.nan


def profit_factor(trade_pnl: ArrayLike) -> float:
    """Gross profit / gross loss over trades: ``inf`` with no loss, nan without trades or without either."""
    p = _arr(trade_pnl)
    gain, loss = float(p[p > 0].sum()), float(-p[p < 0].sum())
    if loss == 0.0:
        return math.inf if gain > 0 else math.nan
    return gain / loss

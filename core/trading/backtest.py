"""Vectorized backtest: model scores -> signals -> positions -> returns after costs -> equity and a summary.

Timing, the one place where look-ahead could creep in: the score of bar ``i`` is computed from bars
``0..i`` only (:func:`spark_ml.core.features.series_features`); its signal sets the position held from the close of
bar ``i`` to the close of bar ``i + 1``. So ``n`` prices give ``n - 1`` strategy returns, and the last
bar's score is never used. A position change pays ``cost_bp + slippage_bp`` basis points of the equity it
moves (see :mod:`spark_ml.core.trading.analytics` for the exact rule); a position still open at the end pays no exit
cost
and counts as unrealized PnL.

Signals follow the live worker (:class:`spark_ml.core.engine.SignalPolicy`): ``buy`` goes long, ``sell`` goes flat
(long/flat) or short (long/short), ``hold`` keeps the current position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spark_ml.core.engine import SignalPolicy
from spark_ml.core.trading import analytics as an

__all__ = [
    "BP",
    "METRIC_COLUMNS",
    "SIGNAL_CODES",
    "StrategyResult",
    "backtest_positions",
    "backtest_scores",
    "buy_and_hold",
    "metric_text",
    "positions_from_signals",
    "signal_codes",
    "summarize",
]

BP = 1e-4
SIGNAL_CODES: dict[str, int] = {"buy": 1, "sell": -1, "hold": 0}
"""Signal name -> code: +1 buy, -1 sell, 0 hold."""

F64 = NDArray[np.float64]

METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "total return", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "max drawdown", "pct"),
    ("var_95", "VaR 95%", "pct"),
    ("var_99", "VaR 99%", "pct"),
    ("var_95_parametric", "VaR 95% (Gaussian)", "pct"),
    ("win_rate", "win rate", "pct"),
    ("profit_factor", "profit factor", "num"),
    ("trades", "trades", "int"),
    ("exposure", "exposure", "pct"),
    ("realized_pnl", "realized PnL", "pct"),
    ("unrealized_pnl", "unrealized PnL", "pct"),
)
"""The metrics tables' columns: key of :func:`summarize`, title, format (:func:`metric_text`)."""


def metric_text(value: Any, kind: str) -> str:
    """One figure of :func:`summarize` as a table shows it: ``pct`` as a percentage, ``int`` whole, else two
    decimals; ``n/a`` when undefined (None)."""
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{100.0 * value:.2f}%"
    if kind == "int":
        return str(int(value))
    return f"{value:.2f}"


def signal_codes(scores: ArrayLike, policy: SignalPolicy | None = None) -> NDArray[np.int8]:
    """Codes of the signals the live worker would emit for these scores (+1 buy, -1 sell, 0 hold)."""
    signals = (policy or SignalPolicy()).signals(np.asarray(scores, dtype=np.float64).reshape(-1))
    return np.fromiter((SIGNAL_CODES[s] for s in signals), dtype=np.int8, count=len(signals))


def positions_from_signals(codes: ArrayLike, *, long_short: bool = False) -> F64:
    """Target position after each bar's signal: buy -> +1, sell -> -1 (or 0 long/flat), hold -> unchanged."""
    c = np.asarray(codes, dtype=np.int64).reshape(-1)
    target = np.where(c > 0, 1.0, np.where(c < 0, -1.0 if long_short else 0.0, np.nan))
    # Carry the last non-hold target forward; before the first one the strategy is flat.
    idx = np.where(np.isnan(target), -1, np.arange(c.size))
    last = np.maximum.accumulate(idx) if c.size else idx
    out: F64 = np.where(last >= 0, target[np.maximum(last, 0)], 0.0)
    return out


@dataclass(frozen=True, eq=False)
class StrategyResult:
    """One strategy over one period.

    Attributes:
        name: strategy label (``ml``, ``baseline``, ``buy_and_hold``).
        positions: position held over each return (length ``n - 1``).
        asset_returns: close-to-close returns of the asset (length ``n - 1``).
        returns: the strategy's net returns (length ``n - 1``).
        equity: equity at each bar's close, starting at 1 (length ``n``).
        trades: round trips with their PnL.
        periods_per_year: bars per year used to annualize.
        cost_rate: cost per unit of position moved (costs plus slippage, as a fraction).
    """

    name: str
    positions: F64
    asset_returns: F64
    returns: F64
    equity: F64
    trades: an.Trades
    periods_per_year: float
    cost_rate: float

    def summary(self) -> dict[str, Any]:
        """Headline figures (fractions, not percent); undefined ratios are nan (see :func:`summarize`)."""
        return summarize(self.returns, self.positions, self.trades, self.periods_per_year)


def summarize(returns: ArrayLike, positions: ArrayLike, trades: an.Trades, periods_per_year: float) -> dict[str, Any]:
    """Headline figures of net ``returns`` earned holding ``positions`` through ``trades``, annualized with
    ``periods_per_year``: fractions, not percent; undefined ratios are nan. The one place the figures of a
    backtest, of an export and of a tear sheet are computed."""
    r, t = np.asarray(returns, dtype=np.float64).reshape(-1), trades
    return {
        "total_return": an.total_return(r),
        "sharpe": an.sharpe(r, periods_per_year),
        "sortino": an.sortino(r, periods_per_year),
        "max_drawdown": an.max_drawdown(r),
        "var_95": an.var_historical(r, 0.95),
        "var_99": an.var_historical(r, 0.99),
        "var_95_parametric": an.var_parametric(r, 0.95),
        "win_rate": an.win_rate(t.pnl),
        "profit_factor": an.profit_factor(t.pnl),
        "trades": len(t),
        "exposure": an.exposure(positions),
        "realized_pnl": t.realized,
        "unrealized_pnl": t.unrealized,
        "turnover": float(an.turnover(positions).sum()),
        "bars": int(r.size),
    }


def _cost_rate(cost_bp: float, slippage_bp: float) -> float:
    if not (math.isfinite(cost_bp) and math.isfinite(slippage_bp)) or cost_bp < 0 or slippage_bp < 0:
        raise ValueError("cost_bp and slippage_bp must be finite and >= 0")
    return (cost_bp + slippage_bp) * BP


def backtest_positions(
    prices: ArrayLike,
    positions: ArrayLike,
    *,
    periods_per_year: float,
    cost_bp: float = 0.0,
    slippage_bp: float = 0.0,
    name: str = "strategy",
) -> StrategyResult:
    """Backtest target positions decided at each bar's close (``positions[i]`` is held over bar i -> i+1)."""
    p = np.asarray(prices, dtype=np.float64).reshape(-1)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1)
    if p.size != pos.size:
        raise ValueError(f"{p.size} prices but {pos.size} positions")
    if p.size < 2:
        raise ValueError("need at least two prices")
    if not (np.isfinite(p).all() and (p > 0).all()):
        raise ValueError("prices must be finite and > 0")
    if not np.isin(pos, (-1.0, 0.0, 1.0)).all():
        raise ValueError("positions must be -1, 0 or 1")
    rate = _cost_rate(cost_bp, slippage_bp)
    held = pos[:-1]  # the last bar's decision has no next bar to earn on
    ar = p[1:] / p[:-1] - 1.0
    net = an.strategy_returns(held, ar, rate)
    equity = np.concatenate(([1.0], an.equity_curve(net)))
    return StrategyResult(name, held, ar, net, equity, an.trades(held, ar, rate), periods_per_year, rate)


def backtest_scores(
    prices: ArrayLike,
    scores: ArrayLike,
    *,
    periods_per_year: float,
    policy: SignalPolicy | None = None,
    long_short: bool = False,
    cost_bp: float = 0.0,
    slippage_bp: float = 0.0,
    name: str = "strategy",
) -> StrategyResult:
    """Backtest a model's scores (``scores[i]`` from features of bars ``0..i``) through the live signal policy."""
    positions = positions_from_signals(signal_codes(scores, policy), long_short=long_short)
    return backtest_positions(
        prices, positions, periods_per_year=periods_per_year, cost_bp=cost_bp, slippage_bp=slippage_bp, name=name
    )


def buy_and_hold(
    prices: ArrayLike, *, periods_per_year: float, cost_bp: float = 0.0, slippage_bp: float = 0.0
) -> StrategyResult:
    """Long from the first bar's close to the last (one entry cost, no exit)."""
    p = np.asarray(prices, dtype=np.float64).reshape(-1)
    return backtest_positions(
        p,
        np.ones_like(p),
        periods_per_year=periods_per_year,
        cost_bp=cost_bp,
        slippage_bp=slippage_bp,
        name="buy_and_hold",
    )

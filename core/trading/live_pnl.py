"""Incremental paper trading of one symbol: the live twin of :mod:`spark_ml.core.trading.backtest`.

:class:`PaperPosition` follows the same rules as the vectorized backtest (see :mod:`spark_ml.core.trading.analytics`): a
``buy`` goes long, a ``sell`` goes short (long/short) or flat (long/flat), ``hold`` keeps the position;
a position buys or sells short units worth the whole equity at the last price and keeps them until it
changes; each change pays ``cost_bp`` basis points of the equity it moves. Fed the same prices and signals,
it reproduces the backtest's equity (``tests/core/test_live_pnl.py`` checks it).

:meth:`~PaperPosition.update` and :meth:`~PaperPosition.on_signal` are O(1). Risk figures that need a
distribution (VaR) look at the returns between the last ``var_window`` price updates; they are computed
in :meth:`~PaperPosition.snapshot`, which is O(``var_window``).

For the query API and exports it also keeps bounded histories (:mod:`spark_ml.core.trading.live_history`): an
equity curve of at most ``curve_points`` points over its whole life and the ``trades_kept`` most recent closed
trades; the timestamps of the returns window (for annualizing Sharpe and Sortino) and the updates spent in a
position (exposure). :meth:`~PaperPosition.state` and :meth:`~PaperPosition.from_state` turn all of it into plain
data and back, for checkpoints.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.trading import analytics
from spark_ml.core.trading.backtest import BP, SIGNAL_CODES
from spark_ml.core.trading.live_history import ClosedTrade, EquityCurve

__all__ = ["STATE_VERSION", "PaperPosition", "PnlSnapshot", "TradeTotals"]

STATE_VERSION = 1
"""Layout version of :meth:`PaperPosition.state`; :meth:`PaperPosition.from_state` refuses any other."""

_Z95 = NormalDist().inv_cdf(0.05)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True, slots=True)
class PnlSnapshot:
    """The state of one paper position. Money figures are in units of the starting equity.

    Attributes:
        ts: timestamp of the last price (epoch ms), or None before the first one.
        price: last price (nan before the first one).
        position: -1 short, 0 flat, +1 long.
        equity: marked-to-market equity.
        pnl: ``equity - start``, equal to ``realized_pnl + unrealized_pnl``.
        realized_pnl: PnL of closed trades, costs included.
        unrealized_pnl: PnL of the open trade, marked to the last price.
        total_return: ``equity / start - 1``.
        drawdown: current fall from the running peak of equity, 0..1.
        max_drawdown: largest drawdown so far, 0..1.
        var_95: historical one-update VaR at 95%, a positive fraction of equity (nan until 2 returns).
        var_99: historical one-update VaR at 99%.
        var_95_parametric: Gaussian one-update VaR at 95%.
        win_rate: winning trades / trades, the open trade marked to market (nan without trades).
        profit_factor: gross profit / gross loss over the same trades (inf without losses).
        trades: trades opened so far.
        updates: prices seen.
        last_signal: the last signal received, or None.
    """

    ts: int | None
    price: float
    position: int
    equity: float
    pnl: float
    realized_pnl: float
    unrealized_pnl: float
    total_return: float
    drawdown: float
    max_drawdown: float
    var_95: float
    var_99: float
    var_95_parametric: float
    win_rate: float
    profit_factor: float
    trades: int
    updates: int
    last_signal: str | None

    def wire(self) -> dict[str, Any]:
        """camelCase plain data for the wire; nan and inf (undefined or unbounded ratios) become None."""
        out: dict[str, Any] = {}
        for key, name in _WIRE_NAMES:
            value = getattr(self, key)
            if type(value) is float and not math.isfinite(value):
                value = None
            out[name] = value
        return out


_WIRE_NAMES = tuple((f.name, _camel(f.name)) for f in fields(PnlSnapshot))


def _lower_quantiles(r: NDArray[np.float64], qs: tuple[float, float]) -> tuple[float, float]:
    """``np.quantile(r, qs)`` (linear interpolation) with one partial sort instead of two full ones."""
    n = r.size
    pos = [q * (n - 1) for q in qs]
    lo = [int(p) for p in pos]
    kth = sorted({k for i in lo for k in (i, min(i + 1, n - 1))})
    part = np.partition(r, kth)
    a, b = (float(part[i] + (part[min(i + 1, n - 1)] - part[i]) * (p - i)) for i, p in zip(lo, pos, strict=True))
    return a, b


@dataclass(frozen=True, slots=True)
class TradeTotals:
    """Counts over every trade so far, the open one marked to market (as the backtest counts them).

    Attributes:
        trades: trades opened.
        wins: trades with a positive PnL.
        profit: gross profit of the winning trades.
        loss: gross loss of the losing trades (positive).
    """

    trades: int
    wins: int
    profit: float
    loss: float


class PaperPosition:
    """One symbol's paper position, driven by prices and signals.

    Args:
        cost_bp: cost plus slippage per unit of position moved, in basis points.
        long_short: a ``sell`` goes short when true, flat when false.
        var_window: number of most recent update-to-update returns the VaR, Sharpe and Sortino figures use.
        start: starting equity.
        trades_kept: closed trades kept for :meth:`trade_list` (the most recent ones).
        curve_points: points the equity curve keeps at most (even).
    """

    __slots__ = (
        "_cash",
        "_closed_loss",
        "_closed_profit",
        "_closed_wins",
        "_cost",
        "_entry",
        "_entry_equity",
        "_held",
        "_long_short",
        "_mark",
        "_pending",
        "_rets",
        "_start",
        "_sum",
        "_sumsq",
        "_trades",
        "_tsw",
        "_units",
        "curve",
        "last_signal",
        "max_drawdown",
        "n_closed",
        "n_trades",
        "peak",
        "position",
        "price",
        "realized",
        "ts",
        "updates",
    )

    def __init__(
        self,
        *,
        cost_bp: float = 0.0,
        long_short: bool = False,
        var_window: int = 500,
        start: float = 1.0,
        trades_kept: int = 500,
        curve_points: int = 1000,
    ):
        if not (math.isfinite(cost_bp) and cost_bp >= 0):
            raise ValueError("cost_bp must be finite and >= 0")
        if var_window < 2:
            raise ValueError("var_window must be at least 2")
        if not (math.isfinite(start) and start > 0):
            raise ValueError("start must be finite and > 0")
        if trades_kept < 0:
            raise ValueError("trades_kept must be >= 0")
        self.curve = EquityCurve(curve_points)
        self._trades: deque[ClosedTrade] = deque(maxlen=trades_kept)
        self._entry: tuple[int | None, float] = (None, math.nan)
        """Timestamp and price the open trade was entered at."""
        self._tsw: deque[int | None] = deque(maxlen=var_window + 1)
        """Timestamps of the updates that bound the returns window (one more than the returns)."""
        self._held = 0
        """Updates after the first over whose price move a position was held (exposure's numerator)."""
        self._cost = cost_bp * BP
        self._long_short = long_short
        self._start = start
        self._cash = start
        self._units = 0.0
        self._mark = start  # equity at the previous price update, for update-to-update returns
        self._entry_equity = 0.0
        self._pending: int | None = None
        self._rets: deque[float] = deque(maxlen=var_window)
        self._sum = 0.0
        self._sumsq = 0.0
        self._closed_wins = 0
        self._closed_profit = 0.0
        self._closed_loss = 0.0
        self.price = math.nan
        self.ts: int | None = None
        self.position = 0
        self.peak = start
        self.max_drawdown = 0.0
        self.realized = 0.0
        self.n_trades = 0
        self.n_closed = 0
        self.updates = 0
        self.last_signal: str | None = None

    @property
    def equity(self) -> float:
        return self._cash + self._units * self.price if self._units else self._cash

    def update(self, price: float, ts: int | None = None) -> None:
        """Mark to a new price; a signal that arrived before any price is executed at this one."""
        if not (math.isfinite(price) and price > 0):
            raise ValueError("price must be finite and > 0")
        self.price = price
        self.ts = ts
        self.updates += 1
        if self.position and self.updates > 1:
            self._held += 1
        self._tsw.append(ts)
        if self._pending is not None:
            target, self._pending = self._pending, None
            self._move(target)
        eq = self.equity
        if eq <= 0.0 and self.position:  # a short wiped out: nothing left to trade with
            self._close_out()
            eq = self.equity
        if self.updates > 1:
            r = eq / self._mark - 1.0 if self._mark > 0 else 0.0
            rets = self._rets
            if len(rets) == rets.maxlen:
                old = rets[0]
                self._sum -= old
                self._sumsq -= old * old
            rets.append(r)
            self._sum += r
            self._sumsq += r * r
        self._mark = eq
        self._drawdown(eq)
        self.curve.add(ts, eq, price)

    def on_signal(self, signal: str) -> None:
        """Act on ``buy``, ``sell`` or ``hold`` at the last price (or at the next one if none is known yet)."""
        code = SIGNAL_CODES.get(signal)
        if code is None:
            raise ValueError(f"unknown signal {signal!r}")
        self.last_signal = signal
        if code == 0:
            return
        target = 1 if code > 0 else (-1 if self._long_short else 0)
        if math.isnan(self.price):
            self._pending = target
            return
        self._move(target)

    def _move(self, target: int) -> None:
        prev = self.position
        if target == prev:
            return
        eq = self.equity
        if prev:
            self._book(eq * (1.0 - self._cost) - self._entry_equity)
        self._entry_equity = eq * (1.0 - self._cost * abs(prev))
        eq *= 1.0 - self._cost * abs(target - prev)
        self._units = target * eq / self.price
        self._cash = eq - self._units * self.price
        self.position = target
        if target:
            self.n_trades += 1
            self._entry = (self.ts, self.price)

    def _close_out(self) -> None:
        eq = max(self.equity, 0.0)
        self._book(eq - self._entry_equity)
        self._units, self._cash, self.position = 0.0, eq, 0

    def _book(self, pnl: float) -> None:
        if self._trades.maxlen:
            began = self._entry_equity
            entry_ts, entry_price = self._entry
            ret = pnl / began if began > 0 else math.nan
            self._trades.append(ClosedTrade(self.position, entry_ts, entry_price, self.ts, self.price, pnl, ret))
        self.realized += pnl
        self.n_closed += 1
        if pnl > 0:
            self._closed_wins += 1
            self._closed_profit += pnl
        elif pnl < 0:
            self._closed_loss -= pnl

    def _drawdown(self, eq: float) -> None:
        if eq > self.peak:
            self.peak = eq
        dd = 1.0 - eq / self.peak
        if dd > self.max_drawdown:
            self.max_drawdown = dd

    def _var(self) -> tuple[float, float, float]:
        n = len(self._rets)
        if n < 2:
            return math.nan, math.nan, math.nan
        q95, q99 = _lower_quantiles(np.fromiter(self._rets, dtype=np.float64, count=n), (0.05, 0.01))
        mean = self._sum / n
        sd = math.sqrt(max(self._sumsq - n * mean * mean, 0.0) / (n - 1))
        return max(0.0, -q95), max(0.0, -q99), max(0.0, -(mean + _Z95 * sd))

    @property
    def unrealized(self) -> float:
        """PnL of the open trade, marked to the last price (0 when flat)."""
        return self.equity - self._entry_equity if self.position else 0.0

    def totals(self) -> TradeTotals:
        """Trade counts and gross profit and loss, the open trade marked to market (as in the backtest)."""
        unrealized = self.unrealized
        wins, profit, loss = self._closed_wins, self._closed_profit, self._closed_loss
        if self.position:
            wins += unrealized > 0
            profit += max(unrealized, 0.0)
            loss += max(-unrealized, 0.0)
        return TradeTotals(self.n_trades, wins, profit, loss)

    def returns(self) -> NDArray[np.float64]:
        """The update-to-update returns of the window (at most ``var_window``), oldest first."""
        return np.fromiter(self._rets, dtype=np.float64, count=len(self._rets))

    def periods_per_year(self) -> float:
        """Updates per year over the returns window, from its timestamps (nan without two increasing ones)."""
        n = len(self._rets) + 1  # the window's bounds: the deque holds one more stamp once it is full
        tsw = self._tsw
        first, last = (tsw[-n], tsw[-1]) if 2 <= n <= len(tsw) else (None, None)
        if first is None or last is None:
            return math.nan
        try:  # only the ends and the count matter: no copy of the whole window
            return analytics.periods_per_year(np.linspace(first, last, n))
        except ValueError:
            return math.nan

    @property
    def exposure(self) -> float:
        """Share of price moves (updates after the first) over which a position was held (nan before two)."""
        return self._held / (self.updates - 1) if self.updates > 1 else math.nan

    def trade_list(self) -> list[ClosedTrade]:
        """The kept closed trades, oldest first, then the open one (exit None, PnL marked to market)."""
        out = list(self._trades)
        if self.position:
            began = self._entry_equity
            unrealized = self.unrealized
            entry_ts, entry_price = self._entry
            ret = unrealized / began if began > 0 else math.nan
            out.append(ClosedTrade(self.position, entry_ts, entry_price, None, math.nan, unrealized, ret))
        return out

    def snapshot(self) -> PnlSnapshot:
        """All figures now (O(var_window))."""
        eq = self.equity
        unrealized = self.unrealized
        totals = self.totals()
        wins, profit, loss = totals.wins, totals.profit, totals.loss
        n = self.n_trades
        if loss > 0:
            pf = profit / loss
        else:
            pf = math.inf if profit > 0 else math.nan
        var95, var99, var95p = self._var()
        return PnlSnapshot(
            ts=self.ts,
            price=self.price,
            position=self.position,
            equity=eq,
            pnl=eq - self._start,
            realized_pnl=self.realized,
            unrealized_pnl=unrealized,
            total_return=eq / self._start - 1.0,
            drawdown=1.0 - eq / self.peak,
            max_drawdown=self.max_drawdown,
            var_95=var95,
            var_99=var99,
            var_95_parametric=var95p,
            win_rate=wins / n if n else math.nan,
            profit_factor=pf,
            trades=n,
            updates=self.updates,
            last_signal=self.last_signal,
        )

    _STATE_FLOATS = (
        "_cash", "_closed_loss", "_closed_profit", "_cost", "_entry_equity", "_mark", "_start", "_sum", "_sumsq",
        "_units", "max_drawdown", "peak", "price", "realized",
    )  # fmt: skip
    _STATE_INTS = ("_closed_wins", "_held", "n_closed", "n_trades", "position", "updates")

    def state(self) -> dict[str, Any]:
        """Everything this position knows, as plain data (msgpack- and JSON-able but for nan in ``price``)."""
        out: dict[str, Any] = {"v": STATE_VERSION}
        for name in (*self._STATE_FLOATS, *self._STATE_INTS):
            out[name] = getattr(self, name)
        out.update(
            long_short=self._long_short,
            pending=self._pending,
            rets=list(self._rets),
            var_window=self._rets.maxlen,
            tsw=list(self._tsw),
            ts=self.ts,
            last_signal=self.last_signal,
            entry=list(self._entry),
            trades=[t.state() for t in self._trades],
            trades_kept=self._trades.maxlen,
            curve=self.curve.state(),
        )
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PaperPosition:
        """The position :meth:`state` described; ValueError when the layout is not this version's."""
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"paper position state version {state.get('v')!r}, expected {STATE_VERSION}")
        pp = cls(
            long_short=bool(state["long_short"]),
            var_window=int(state["var_window"]),
            trades_kept=int(state["trades_kept"]),
            curve_points=int(state["curve"]["max"]),
        )
        for name in cls._STATE_FLOATS:
            setattr(pp, name, float(state[name]))
        for name in cls._STATE_INTS:
            setattr(pp, name, int(state[name]))
        pp._pending = state["pending"]
        pp._rets.extend(float(r) for r in state["rets"])
        pp._tsw.extend(state["tsw"])
        pp.ts = state["ts"]
        pp.last_signal = state["last_signal"]
        entry_ts, entry_price = state["entry"]
        pp._entry = (entry_ts, float(entry_price))
        pp._trades.extend(ClosedTrade.from_state(row) for row in state["trades"])
        pp.curve = EquityCurve.from_state(state["curve"])
        return pp

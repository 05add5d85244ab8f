"""The figures of the analytics query API (``analytics.get``, ``analytics.export``) for one paper position.

Every figure comes from :class:`~spark_ml.core.trading.live_pnl.PaperPosition` (the same numbers as the
``analytics.pnl.<SYMBOL>`` messages) or from the functions of :mod:`spark_ml.core.trading.analytics` applied to
its returns window; nothing here computes a metric of its own:

* ``sharpe``, ``sortino``: :func:`~spark_ml.core.trading.analytics.sharpe` and
  :func:`~spark_ml.core.trading.analytics.sortino` of the last ``window`` update-to-update returns, annualized by
  the updates per year measured from their timestamps (:func:`~spark_ml.core.trading.analytics.periods_per_year`).
* ``var95``, ``var99``, ``var95Parametric``: the position's own (historical and Gaussian one-update VaR over the
  same window); ``var99Parametric``: :func:`~spark_ml.core.trading.analytics.var_parametric` at 0.99.
* ``exposure``: the share of price moves over which a position was held.

Undefined or unbounded ratios (nan, inf) are None on the wire, as in the PnL messages.
"""

from __future__ import annotations

import math
from typing import Any

from spark_ml.core.trading import analytics
from spark_ml.core.trading.live_pnl import PaperPosition

__all__ = ["finite_or_none", "symbol_export", "symbol_figures"]


def finite_or_none(x: float) -> float | None:
    """``x``, or None when it is nan or infinite (JSON has neither)."""
    return x if math.isfinite(x) else None


def symbol_figures(symbol: str, pp: PaperPosition) -> dict[str, Any]:
    """The ``analytics.get`` body of one symbol (camelCase; see the module docstring)."""
    body = pp.snapshot().wire()
    rets = pp.returns()
    periods = pp.periods_per_year()
    annualize = math.isfinite(periods)
    body.update(
        symbol=symbol,
        asOf=pp.ts,
        sharpe=finite_or_none(analytics.sharpe(rets, periods)) if annualize else None,
        sortino=finite_or_none(analytics.sortino(rets, periods)) if annualize else None,
        var99Parametric=finite_or_none(analytics.var_parametric(rets, 0.99)),
        exposure=finite_or_none(pp.exposure),
        window=int(rets.size),
    )
    return body


def symbol_export(symbol: str, pp: PaperPosition) -> dict[str, Any]:
    """The ``analytics.export`` body of one symbol: its figures, equity curve and trade list."""
    curve = pp.curve
    return {
        "symbol": symbol,
        "figures": symbol_figures(symbol, pp),
        "equityCurve": [list(point) for point in curve.points()],
        "curveStride": curve.stride,
        "trades": [t.wire() for t in pp.trade_list()],
        "tradesTotal": pp.n_trades,
    }

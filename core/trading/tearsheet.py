"""What a tear sheet shows, computed: drawdown periods, monthly returns, rolling Sharpe, VaR, the metrics table.

:func:`tear_sheet` takes the main account's :class:`~spark_ml.core.trading.exports.Book`, the curves to draw
beside it (buy-and-hold first) and the rows of the metrics table; :mod:`spark_ml.core.io.tearsheet` draws and
writes it. Every figure comes from :mod:`spark_ml.core.trading.analytics` (no second implementation): monthly
returns are :func:`~spark_ml.core.trading.analytics.total_return` of each calendar month's returns (UTC), the
rolling Sharpe is :func:`~spark_ml.core.trading.analytics.sharpe` of each trailing window, the VaR lines are
:func:`~spark_ml.core.trading.analytics.var_historical` and :func:`~spark_ml.core.trading.analytics.var_parametric`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.trading import analytics as an
from spark_ml.core.trading.backtest import METRIC_COLUMNS
from spark_ml.core.trading.exports import PORTFOLIO, Book, book_from_strategy, portfolio
from spark_ml.core.trading.report import Comparison

__all__ = [
    "METRIC_COLUMNS",
    "DrawdownPeriod",
    "MonthlyReturns",
    "RollingSharpe",
    "TearSheet",
    "drawdown_periods",
    "from_comparison",
    "from_live",
    "monthly_returns",
    "rolling_sharpe",
    "tear_sheet",
]

F64 = NDArray[np.float64]


BACKTEST_NOTE = (
    "Sharpe and Sortino annualized by the measured frequency of points, risk-free rate 0; max drawdown as a "
    "fraction of the peak; VaR is a one-point loss as a fraction of equity; PnL in units of the starting equity; "
    "n/a where a ratio is undefined."
)
LIVE_NOTE = (
    "The analytics service's own figures at the time of the export (as analytics.get answers them): VaR, Sharpe "
    "and Sortino over its window of the last update-to-update returns, the others over the whole history; "
    "PnL in units of the starting equity; n/a where a ratio is undefined. The plots are drawn from the equity "
    "curves, which keep a bounded number of points spread over the whole history."
)
TOP_DRAWDOWNS = 5
ROLLING_POINTS = 800
"""At most this many rolling-Sharpe points are computed (each one is a Sharpe over a whole window)."""


@dataclass(frozen=True, slots=True)
class DrawdownPeriod:
    """One fall from a peak and the way back.

    Attributes:
        peak: index of the point the fall started from.
        trough: index of the lowest point.
        recovery: index of the first point back at the peak, or None when not yet recovered.
        depth: the drawdown at the trough, 0..1.
    """

    peak: int
    trough: int
    recovery: int | None
    depth: float


def drawdown_periods(drawdown: F64, top: int = TOP_DRAWDOWNS) -> list[DrawdownPeriod]:
    """The ``top`` deepest drawdown periods of a drawdown series (0 at the start), deepest first."""
    dd = np.asarray(drawdown, dtype=np.float64)
    under = dd > 0.0
    if not under.any():
        return []
    edges = np.diff(np.concatenate(([False], under, [False])).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # [start, end) runs under water
    periods = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        trough = s + int(np.argmax(dd[s:e]))
        periods.append(DrawdownPeriod(max(s - 1, 0), trough, e if e < dd.size else None, float(dd[trough])))
    periods.sort(key=lambda p: -p.depth)
    return periods[:top]


@dataclass(frozen=True, eq=False)
class MonthlyReturns:
    """Compounded returns per calendar month (UTC) and per year.

    Attributes:
        years: the years covered, increasing.
        table: ``len(years) x 12`` returns, nan for a month without data.
        yearly: each year's compounded return.
    """

    years: list[int]
    table: F64
    yearly: F64


def monthly_returns(ts: NDArray[np.int64], returns: F64) -> MonthlyReturns:
    """Returns ``returns[k]`` (earned from point k to k + 1) grouped by the month of point k + 1."""
    r = np.asarray(returns, dtype=np.float64)
    when = np.asarray(ts[1:], dtype="datetime64[ms]")
    months = when.astype("datetime64[M]").astype(np.int64)  # months since 1970-01
    if r.size == 0:
        return MonthlyReturns([], np.empty((0, 12)), np.empty(0))
    first_year, last_year = int(months[0] // 12) + 1970, int(months[-1] // 12) + 1970
    years = list(range(first_year, last_year + 1))
    table = np.full((len(years), 12), math.nan)
    yearly = np.full(len(years), math.nan)
    for m in np.unique(months).tolist():
        table[m // 12 + 1970 - first_year, m % 12] = an.total_return(r[months == m])
    for i, y in enumerate(years):
        yearly[i] = an.total_return(r[months // 12 + 1970 == y])
    return MonthlyReturns(years, table, yearly)


@dataclass(frozen=True, eq=False)
class RollingSharpe:
    """Annualized Sharpe of each trailing window of ``window`` returns, at the window's last point.

    Attributes:
        at: point index of each value (the end of its window).
        values: the Sharpe ratios (nan for a window without variation).
        window: returns per window.
        span_ms: the typical time a window covers (median spacing times ``window``).
    """

    at: NDArray[np.int64]
    values: F64
    window: int
    span_ms: float


def rolling_sharpe(ts: NDArray[np.int64], returns: F64, periods_per_year: float) -> RollingSharpe:
    """Rolling Sharpe over about a month of points (at least 20, at most a quarter of the series)."""
    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    month = round(periods_per_year / 12.0) if math.isfinite(periods_per_year) else 20
    window = int(min(max(month, 20), max(n // 4, 2)))
    if n < window or n < 2:
        return RollingSharpe(np.empty(0, np.int64), np.empty(0), window, 0.0)
    ends = np.unique(np.linspace(window, n, min(ROLLING_POINTS, n - window + 1)).round().astype(np.int64))
    values = np.array([an.sharpe(r[e - window : e], periods_per_year) for e in ends.tolist()])
    span = float(np.median(np.diff(ts))) * window if ts.size > 1 else 0.0
    return RollingSharpe(ends, values, window, span)


@dataclass(frozen=True, eq=False)
class TearSheet:
    """Everything a tear sheet shows.

    Args:
        title: the heading.
        lines: a few lines that say what was traded, when, and how.
        main: the account the plots are about.
        main_label: its row in ``metrics`` and its name in the legends.
        curves: equity curves to draw beside it on ``main.ts`` by label (buy-and-hold first), each starting at 1.
        metrics: rows of the metrics table by label: :func:`spark_ml.core.trading.backtest.summarize` dicts, as in
            the JSON report (None for an undefined figure).
        metrics_note: where the metrics come from and how they are defined (shown above the table).
        point: what one point of the curves is (``bar``; ``curve point`` for a thinned live curve).
        var_levels: the VaR lines on the distribution of returns: ``(label, value)`` pairs, positive losses.
        drawdowns: the deepest drawdown periods of ``main``.
        monthly: ``main``'s monthly returns.
        rolling: ``main``'s rolling Sharpe.
    """

    title: str
    lines: list[str]
    main: Book
    main_label: str
    curves: dict[str, F64]
    metrics: dict[str, dict[str, Any]]
    metrics_note: str
    point: str
    var_levels: list[tuple[str, float]]
    drawdowns: list[DrawdownPeriod]
    monthly: MonthlyReturns
    rolling: RollingSharpe


def tear_sheet(
    main: Book,
    *,
    main_label: str,
    title: str,
    lines: Sequence[str],
    curves: Mapping[str, F64],
    metrics: Mapping[str, Mapping[str, Any]],
    metrics_note: str = "",
    point: str = "bar",
) -> TearSheet:
    """Compute the tear sheet of ``main`` (see :class:`TearSheet` for the arguments)."""
    r = main.returns
    var_levels = [
        ("VaR 95% (historical)", an.var_historical(r, 0.95)),
        ("VaR 99% (historical)", an.var_historical(r, 0.99)),
        ("VaR 95% (Gaussian)", an.var_parametric(r, 0.95)),
    ]
    return TearSheet(
        title=title,
        lines=list(lines),
        main=main,
        main_label=main_label,
        curves=dict(curves),
        metrics={k: dict(v) for k, v in metrics.items()},
        metrics_note=metrics_note or BACKTEST_NOTE,
        point=point,
        var_levels=[(label, v) for label, v in var_levels if math.isfinite(v)],
        drawdowns=drawdown_periods(main.drawdown),
        monthly=monthly_returns(main.ts, r),
        rolling=rolling_sharpe(main.ts, r, main.periods_per_year),
    )


def from_comparison(comparison: Comparison, *, lines: Sequence[str] = ()) -> TearSheet:
    """The tear sheet of a backtest: the ML strategy against buy-and-hold (and the baseline), its metrics
    table the JSON report's ``strategies``."""
    doc = comparison.doc
    ml = comparison.results["ml"]
    main = book_from_strategy(str(doc["symbol"]), ml, comparison.ts, comparison.prices)
    curves = {"buy and hold": comparison.results["buy_and_hold"].equity}
    curves.update({name: res.equity for name, res in comparison.results.items() if name not in ("ml", "buy_and_hold")})
    return tear_sheet(
        main,
        main_label="ml",
        title=f"{doc['symbol']} backtest: ml against buy-and-hold and the baseline",
        lines=lines,
        curves=curves,
        metrics=doc["strategies"],
    )


MAX_SYMBOL_CURVES = 6
"""A live tear sheet draws each symbol's equity beside the portfolio's up to this many symbols."""


def from_live(
    whole: Book, books: Sequence[Book], metrics: Mapping[str, Mapping[str, Any]], *, title: str, lines: Sequence[str]
) -> TearSheet:
    """The tear sheet of a live export: the portfolio's curve with the symbols' (and equal-weight buy-and-hold
    when the curves carry prices), the metrics table the service's figures (:data:`LIVE_NOTE`)."""
    curves: dict[str, F64] = {}
    if books and all(np.isfinite(b.price).all() and (b.price > 0).all() for b in books):
        hold = [
            Book(b.symbol, b.ts, b.price / b.price[0], np.ones(b.ts.size), b.price, (), b.periods_per_year)
            for b in books
        ]
        curves["buy and hold (equal weight)"] = _on(whole.ts, portfolio(hold))
    if len(books) <= MAX_SYMBOL_CURVES:
        curves.update({b.symbol: _on(whole.ts, b) for b in books})
    return tear_sheet(
        whole,
        main_label=PORTFOLIO,
        title=title,
        lines=lines,
        curves=curves,
        metrics=metrics,
        metrics_note=LIVE_NOTE,
        point="curve point",
    )


def _on(ts: NDArray[np.int64], book: Book) -> F64:
    """``book``'s equity relative to its start at each of ``ts`` (its last point at or before; 1 ahead of its first)."""
    at = np.searchsorted(book.ts, ts, side="right") - 1
    rel = book.equity / book.equity[0] if book.equity[0] > 0 else book.equity
    out: F64 = np.where(at >= 0, rel[np.maximum(at, 0)], 1.0)
    return out

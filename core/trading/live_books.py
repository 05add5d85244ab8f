"""The live analytics service's export (``analytics.export`` replies) as books (:mod:`spark_ml.core.trading.exports`).

A reply for one symbol carries ``figures`` (the ``analytics.get`` body), ``equityCurve`` (``[[ts, equity], ...]``
spread over the symbol's whole history, optionally ``[ts, equity, price]``) and ``trades`` (``side`` +1/-1,
``entryTs``, ``entryPrice``, ``exitTs``, ``exitPrice``, ``pnl``, ``return``; the open one with ``exitTs`` null);
the portfolio's reply has ``figures``, ``equityCurve`` and the names of the ``symbols``, and its trades are the
symbols' trades (:func:`whole_book`). The live state keeps no position per point, so the books' ``position``
is nan, and no price unless the curve carries one.

The metrics of a live export are the service's own ``figures`` (:func:`figures_row` renames them to the keys
of :func:`spark_ml.core.trading.backtest.summarize`), not figures recomputed from the curve: the curve is
thinned to a bounded number of points, and the service computes VaR, Sharpe and Sortino over its own window
of update-to-update returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spark_ml.core.trading import analytics as an
from spark_ml.core.trading.exports import PORTFOLIO, Book, Trade, all_trades
from spark_ml.core.trading.tearsheet import METRIC_COLUMNS

__all__ = ["book_from_export", "figures_row", "whole_book"]

_SIDES = {1: "long", -1: "short"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def figures_row(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The service's figures under the keys of the metrics table (``totalReturn`` -> ``total_return``,
    ``var95`` -> ``var_95``); a figure it does not give is None."""
    return {key: figures.get(_camel(key)) for key, _, _ in METRIC_COLUMNS}


def _number(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{what}: expected a number, got {x!r}")
    return float(x)


def _opt_number(x: Any, what: str) -> float:
    return math.nan if x is None else _number(x, what)


def _opt_ts(x: Any, what: str) -> int | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError(f"{what}: expected epoch milliseconds, got {x!r}")
    return x


def _curve(body: Mapping[str, Any], name: str) -> tuple[list[int], list[float], list[float]]:
    points = body.get("equityCurve")
    if not isinstance(points, list):
        raise ValueError(f"{name}: the export has no equityCurve list")
    ts: list[int] = []
    equity: list[float] = []
    price: list[float] = []
    for i, point in enumerate(points):
        if not isinstance(point, list) or len(point) not in (2, 3):
            raise ValueError(f"{name}: equityCurve[{i}] is not [ts, equity] or [ts, equity, price]")
        t = _opt_ts(point[0], f"{name}: equityCurve[{i}] ts")
        if t is None:
            continue  # a mark without a timestamp cannot be placed in time
        ts.append(t)
        equity.append(_number(point[1], f"{name}: equityCurve[{i}] equity"))
        price.append(_opt_number(point[2], f"{name}: equityCurve[{i}] price") if len(point) == 3 else math.nan)
    return ts, equity, price


def _trade(symbol: str, i: int, row: Any) -> Trade:
    what = f"{symbol}: trades[{i}]"
    if not isinstance(row, Mapping):
        raise ValueError(f"{what} is not an object")
    side = _SIDES.get(row.get("side"))  # type: ignore[arg-type]
    if side is None:
        raise ValueError(f"{what}: side must be 1 or -1, got {row.get('side')!r}")
    exit_ts = _opt_ts(row.get("exitTs"), f"{what} exitTs")
    return Trade(
        symbol=symbol,
        side=side,
        entry_ts=_opt_ts(row.get("entryTs"), f"{what} entryTs"),
        exit_ts=exit_ts,
        entry_price=_opt_number(row.get("entryPrice"), f"{what} entryPrice"),
        exit_price=_opt_number(row.get("exitPrice"), f"{what} exitPrice"),
        pnl=_number(row.get("pnl"), f"{what} pnl"),
        ret=_opt_number(row.get("return"), f"{what} return"),
        is_open=exit_ts is None,
    )


def _book(symbol: str, body: Mapping[str, Any], trades: tuple[Trade, ...]) -> Book | None:
    ts, equity, price = _curve(body, symbol)
    if not ts:
        return None
    order = np.argsort(np.asarray(ts, dtype=np.int64), kind="stable")  # a restored curve is in order already
    t = np.asarray(ts, dtype=np.int64)[order]
    periods = an.periods_per_year(t) if t.size > 1 and t[-1] > t[0] else math.nan
    eq = np.asarray(equity, dtype=np.float64)[order]
    return Book(symbol, t, eq, np.full(t.size, math.nan), np.asarray(price)[order], trades, periods)


def book_from_export(body: Mapping[str, Any]) -> Book | None:
    """One symbol's ``analytics.export`` reply as a book (None when its curve has no point yet);
    ValueError naming the field when the reply is malformed."""
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError("the export of a symbol names no symbol")
    rows = body.get("trades", [])
    if not isinstance(rows, list):
        raise ValueError(f"{symbol}: trades is not a list")
    return _book(symbol, body, tuple(_trade(symbol, i, row) for i, row in enumerate(rows)))


def whole_book(body: Mapping[str, Any], books: Sequence[Book]) -> Book | None:
    """The portfolio's ``analytics.export`` reply as a book, its trades every symbol's (each ``pnl`` in its
    symbol's units: the reply does not say how the portfolio weighs them when weights are configured)."""
    return _book(PORTFOLIO, body, all_trades(books))

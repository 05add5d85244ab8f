"""The analytics service's export replies as books: curves, trades, weights, the figures' keys, malformed replies."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from spark_ml.core.trading.live_books import book_from_export, figures_row, whole_book
from spark_ml.core.trading.tearsheet import METRIC_COLUMNS

T0 = 1_700_000_000_000


def _reply(symbol: str, curve: list[list[Any]], trades: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"symbol": symbol, "figures": {"totalReturn": 0.1}, "equityCurve": curve, "trades": trades or []}


def _trade(side: int, entry: int, exit_ts: int | None, pnl: float) -> dict[str, Any]:
    return {"side": side, "entryTs": entry, "entryPrice": 1.1, "exitTs": exit_ts,
            "exitPrice": None if exit_ts is None else 1.2, "pnl": pnl, "return": pnl}  # fmt: skip


def test_a_symbols_reply_becomes_a_book() -> None:
    body = _reply(
        "BRK.B",
        [[T0, 1.0], [T0 + 1000, 1.02], [None, 1.5], [T0 + 2000, 0.99]],
        [_trade(1, T0, T0 + 1000, 0.02), _trade(-1, T0 + 1000, None, -0.03)],
    )
    book = book_from_export(body)
    assert book is not None and book.symbol == "BRK.B"
    assert book.ts.tolist() == [T0, T0 + 1000, T0 + 2000]  # a mark without a timestamp is left out
    assert book.equity.tolist() == [1.0, 1.02, 0.99]
    assert np.isnan(book.position).all() and np.isnan(book.price).all()
    assert [(t.side, t.is_open, t.exit_ts) for t in book.trades] == [("long", False, T0 + 1000), ("short", True, None)]
    assert math.isnan(book.trades[1].exit_price)
    assert book.periods_per_year == pytest.approx(2 / (2000 / (365.25 * 86_400_000)))


def test_prices_in_the_curve_are_kept_and_an_empty_curve_is_no_book() -> None:
    book = book_from_export(_reply("X", [[T0, 1.0, 100.0], [T0 + 1, 1.0, 101.0]]))
    assert book is not None and book.price.tolist() == [100.0, 101.0]
    assert book_from_export(_reply("X", [])) is None


def test_the_portfolio_takes_every_symbols_trades() -> None:
    a = book_from_export(_reply("A", [[T0, 1.0], [T0 + 10, 1.1]], [_trade(1, T0 + 5, None, 0.1)]))
    b = book_from_export(_reply("B", [[T0, 1.0], [T0 + 10, 0.9]], [_trade(1, T0, T0 + 5, -0.1)]))
    assert a is not None and b is not None
    whole = whole_book({"equityCurve": [[T0, 1.0], [T0 + 10, 1.0]]}, [a, b])
    assert whole is not None and whole.symbol == "portfolio" and whole.equity.tolist() == [1.0, 1.0]
    assert [(t.symbol, t.pnl) for t in whole.trades] == [("B", -0.1), ("A", 0.1)]  # by entry time, own units


def test_figures_take_the_metric_tables_keys() -> None:
    figures: dict[str, Any] = {"totalReturn": 0.1, "sharpe": 1.5, "maxDrawdown": 0.02, "var95": 0.001}
    figures["var95Parametric"] = 0.002
    figures.update({"winRate": None, "profitFactor": 2.0, "trades": 3, "realizedPnl": 0.05, "unrealizedPnl": 0.05})
    row = figures_row(figures)
    assert list(row) == [key for key, _, _ in METRIC_COLUMNS]
    assert row["total_return"] == 0.1 and row["var_95"] == 0.001 and row["var_95_parametric"] == 0.002
    assert row["win_rate"] is None and row["sortino"] is None and row["realized_pnl"] == 0.05


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"equityCurve": []}, "names no symbol"),
        ({"symbol": "X"}, "no equityCurve"),
        (_reply("X", [[T0]]), r"equityCurve\[0\] is not"),
        (_reply("X", [["1", 1.0]]), "epoch milliseconds"),
        (_reply("X", [[T0, "1.0"]]), "expected a number"),
        (_reply("X", [[T0, 1.0]], [{"side": 0, "pnl": 0.0}]), "side must be 1 or -1"),
        (_reply("X", [[T0, 1.0]], [{"side": 1}]), r"trades\[0\] pnl"),
        ({**_reply("X", [[T0, 1.0]]), "trades": {}}, "not a list"),
        (_reply("X", [[T0, -1.0]]), "equity must be finite and >= 0"),
    ],
)
def test_malformed_replies_are_refused_with_the_field(body: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        book_from_export(body)

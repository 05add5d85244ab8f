"""Exports: books from a backtest, the equal-weight portfolio by hand, the tables, and the files in each format."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spark_ml.core.io.exports import MissingDependency, write_export, write_tables
from spark_ml.core.trading import analytics as an
from spark_ml.core.trading import backtest as bt
from spark_ml.core.trading.exports import (
    EQUITY_COLUMNS,
    TRADE_COLUMNS,
    Book,
    Trade,
    book_from_strategy,
    book_summary,
    export_tables,
    file_token,
    iso_time,
    portfolio,
)

HOUR = 3_600_000


def _book(symbol: str, ts: list[int], equity: list[float], position: list[float], trades: tuple[Trade, ...] = ()):
    n = len(ts)
    return Book(symbol, np.array(ts, np.int64), np.array(equity), np.array(position), np.full(n, 1.0), trades, 100.0)


@pytest.fixture
def strategy() -> tuple[bt.StrategyResult, np.ndarray, np.ndarray]:
    prices = np.array([100.0, 110.0, 99.0, 99.0, 108.9, 120.0])
    ts = np.arange(prices.size, dtype=np.int64) * HOUR + 1_700_000_000_000
    # long over bars 0->2, flat, short 3->4, long 4->5 and still open at the end
    res = bt.backtest_positions(prices, [1, 1, 0, -1, 1, 1], periods_per_year=an.periods_per_year(ts), cost_bp=10)
    return res, ts, prices


def test_a_backtest_book_has_its_trades_at_the_bars_they_were_taken(strategy) -> None:
    res, ts, prices = strategy
    book = book_from_strategy("EURUSD", res, ts, prices)
    assert [(t.side, t.entry_price, t.exit_price, t.is_open) for t in book.trades] == [
        ("long", 100.0, 99.0, False),
        ("short", 99.0, 108.9, False),
        ("long", 108.9, 120.0, True),
    ]
    assert book.trades[0].exit_ts == ts[2] and book.trades[-1].exit_ts is None
    np.testing.assert_array_equal([t.pnl for t in book.trades], res.trades.pnl)
    np.testing.assert_array_equal(book.position, [1, 1, 0, -1, 1, 1])
    # Then the figures from the book's equity are the backtest's
    mine, theirs = book_summary(book), res.summary()
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        assert mine[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_the_portfolio_is_the_mean_of_the_sleeves_carried_forward() -> None:
    # Given two books on different clocks; b starts later and has a trade
    trade = Trade("B", "long", 2 * HOUR, None, 10.0, 12.0, 0.2, 0.2, True)
    a = _book("A", [0, 2 * HOUR, 4 * HOUR], [1.0, 1.1, 0.99], [1, 1, 0])
    b = _book("B", [HOUR, 2 * HOUR, 3 * HOUR], [1.0, 1.0, 1.2], [0, 1, 1], (trade,))
    p = portfolio([a, b])
    # Then every point of either is a point of the portfolio, each sleeve worth half
    assert p.ts.tolist() == [0, HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR]
    np.testing.assert_allclose(p.equity, [1.0, 1.0, 1.05, 1.15, 1.095])
    np.testing.assert_allclose(p.position, [0.5, 0.5, 1.0, 1.0, 0.5])
    assert [(t.symbol, t.pnl, t.ret) for t in p.trades] == [("B", 0.2, 0.2)]  # in the symbol's own units
    assert np.isnan(p.price).all() and p.symbol == "portfolio"
    assert p.periods_per_year == pytest.approx(an.periods_per_year(p.ts))


def test_a_portfolio_of_one_book_is_that_book(strategy) -> None:
    book = book_from_strategy("X", *strategy)
    p = portfolio([book])
    np.testing.assert_allclose(p.equity, book.equity)
    assert book_summary(p) == pytest.approx(book_summary(book), nan_ok=True)


def test_file_tokens_are_single_safe_names() -> None:
    assert file_token("EURUSD") == "EURUSD"
    assert file_token("BRK.B") == "BRK%2EB"
    assert file_token("EUR/USD") == "EUR%2FUSD"
    assert file_token("..") == "%2E%2E"
    assert file_token('a\\b:c"d<e>f|g?h*') == "a%5Cb%3Ac%22d%3Ce%3Ef%7Cg%3Fh%2A"


def test_tables_hold_every_column_and_row(strategy) -> None:
    book = book_from_strategy("BRK.B", *strategy)
    tables = export_tables([book])
    assert sorted(tables) == [
        "portfolio/equity",
        "portfolio/trades",
        "symbols/BRK%2EB/equity",
        "symbols/BRK%2EB/trades",
    ]
    eq, tr = tables["symbols/BRK%2EB/equity"], tables["symbols/BRK%2EB/trades"]
    assert eq.columns == EQUITY_COLUMNS and tr.columns == TRADE_COLUMNS
    assert len(eq) == book.ts.size and len(tr) == 3
    first, last = eq.records()[0], eq.records()[-1]
    assert first["return"] is None and first["drawdown"] == 0.0 and first["time"] == iso_time(int(book.ts[0]))
    assert last["equity"] == book.equity[-1] and last["price"] == 120.0
    assert tr.records()[-1]["exit_ts"] is None and tr.records()[-1]["exit_time"] is None
    assert tables["portfolio/equity"].records()[1]["price"] is None


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_each_format_reads_back_the_same_values(strategy, tmp_path: Path, fmt: str) -> None:
    book = book_from_strategy("EURUSD", *strategy)
    index = write_export(tmp_path, [book], fmt)
    assert Path(index["index"]).is_file() and json.loads(Path(index["index"]).read_text()) == index
    sym = index["symbols"]["EURUSD"]
    assert sym["metrics"] == pytest.approx(json.loads(json.dumps(book_summary(book))), nan_ok=True)

    def read(path: str) -> pd.DataFrame:
        if fmt == "json":
            return pd.DataFrame(json.loads(Path(path).read_text()))  # pandas' own JSON parser rounds floats
        return pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)

    equity, trades = read(sym["equity"]), read(sym["trades"])
    assert list(equity.columns) == [name for name, _ in EQUITY_COLUMNS]
    np.testing.assert_array_equal(equity["equity"].to_numpy(), book.equity)  # floats survive exactly
    np.testing.assert_array_equal(equity["ts"].to_numpy(), book.ts)
    assert pd.isna(equity["return"].iloc[0]) and equity["drawdown"].iloc[0] == 0.0
    np.testing.assert_array_equal(trades["pnl"].to_numpy(), [t.pnl for t in book.trades])
    assert trades["open"].tolist() == [False, False, True]
    assert Path(index["portfolio"]["trades"]).exists()


def test_csv_writes_booleans_and_missing_values_plainly(strategy, tmp_path: Path) -> None:
    book = book_from_strategy("EURUSD", *strategy)
    paths = write_tables(tmp_path, export_tables([book]), "csv")
    rows = list(csv.DictReader(Path(paths["symbols/EURUSD/trades"]).read_text().splitlines()))
    assert rows[-1]["open"] == "true" and rows[-1]["exit_ts"] == "" and rows[0]["open"] == "false"


def test_parquet_without_pyarrow_names_the_extra(strategy, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingDependency, match=r"pip install 'spark-ml\[train\]'"):
        write_export(tmp_path / "x", [book_from_strategy("EURUSD", *strategy)], "parquet")
    assert not (tmp_path / "x").exists()  # refused before any file


def test_unknown_format_and_bad_books_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format 'xls'"):
        write_tables(tmp_path, {}, "xls")
    with pytest.raises(ValueError, match="differ in length"):
        Book("A", np.array([0, 1]), np.array([1.0]), np.array([0.0]), np.array([1.0]), (), 1.0)
    with pytest.raises(ValueError, match="backwards"):
        _book("A", [2, 1], [1.0, 1.0], [0, 0])
    with pytest.raises(ValueError, match="at least one book"):
        portfolio([])

"""Trading history as tables: the equity curve and the trade list of each symbol and of the portfolio.

A :class:`Book` is one account's history (a backtested strategy on one symbol, or one live paper position);
:func:`portfolio` combines books with equal weights; :func:`export_tables` turns books into the tables that
``spark-ml analytics export`` and ``spark-ml backtest --export`` write (:mod:`spark_ml.core.io.exports` writes
them as CSV, JSON or Parquet). Everything here is shaping: the figures come from
:mod:`spark_ml.core.trading.analytics` and :func:`spark_ml.core.trading.backtest.summarize`.

Conventions:

* Money is in units of the account's starting equity (1.0); a trade's ``pnl`` is in units of its symbol's
  starting equity, in the portfolio's trade list too (which lists every symbol's trades, by entry time).
* **Portfolio** (equal weight, no rebalancing): the starting equity is split equally between the ``N``
  books, each sleeve trades on its own, so the portfolio's equity is the mean of the books' equities, each
  carried forward from its last point (and 1.0 before its first). Its ``position`` is the mean of the books'
  positions (net exposure as a fraction of equity at the start).
* Times are epoch milliseconds (``ts``) with an ISO-8601 UTC copy beside them (``time``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spark_ml.core.subjects import symbol_token
from spark_ml.core.trading import analytics as an
from spark_ml.core.trading.backtest import StrategyResult, summarize

__all__ = [
    "EQUITY_COLUMNS",
    "PORTFOLIO",
    "TRADE_COLUMNS",
    "Book",
    "Table",
    "Trade",
    "all_trades",
    "book_from_strategy",
    "book_summary",
    "export_tables",
    "file_token",
    "iso_time",
    "portfolio",
]

F64 = NDArray[np.float64]
PORTFOLIO = "portfolio"

EQUITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "int"),
    ("time", "str"),
    ("equity", "float"),
    ("return", "float"),
    ("drawdown", "float"),
    ("position", "float"),
    ("price", "float"),
)
"""The equity table: one row per point; ``return`` is since the previous point (empty on the first row),
``position`` is held from this point to the next, ``price`` is the asset's (empty for the portfolio)."""

TRADE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("symbol", "str"),
    ("side", "str"),
    ("entry_ts", "int"),
    ("entry_time", "str"),
    ("exit_ts", "int"),
    ("exit_time", "str"),
    ("entry_price", "float"),
    ("exit_price", "float"),
    ("pnl", "float"),
    ("return", "float"),
    ("open", "bool"),
)
"""The trade table: one row per round trip; the open trade has no exit (its ``exit_price`` is the last mark)."""


def iso_time(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with a ``Z``, to the millisecond."""
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UNSAFE_IN_FILE_NAMES = re.compile(r'[/\\:"<>|?]')


def file_token(symbol: str) -> str:
    """A symbol as one file or folder name: its subject token (:func:`spark_ml.core.subjects.symbol_token`, which
    escapes ``.``, ``*``, ``>`` and ``%``) with the characters file systems refuse escaped the same way (``%XX``).
    """
    return _UNSAFE_IN_FILE_NAMES.sub(lambda m: f"%{ord(m.group()):02X}", symbol_token(symbol))


@dataclass(frozen=True, slots=True)
class Trade:
    """One round trip.

    Attributes:
        symbol: the symbol traded.
        side: ``long`` or ``short``.
        entry_ts: when the position was taken (epoch ms), or None when unknown.
        exit_ts: when it was closed, or None while it is open.
        entry_price: the price it was taken at.
        exit_price: the price it was closed at; for the open trade the last mark (nan when unknown).
        pnl: equity gained, costs included, in units of the account's starting equity.
        ret: ``pnl`` over the account's equity when the trade began.
        is_open: still open at the end of the history (its PnL is unrealized).
    """

    symbol: str
    side: str
    entry_ts: int | None
    exit_ts: int | None
    entry_price: float
    exit_price: float
    pnl: float
    ret: float
    is_open: bool


@dataclass(frozen=True, eq=False)
class Book:
    """One account's history: equity points and trades.

    Args:
        symbol: the symbol, or :data:`PORTFOLIO`.
        ts: epoch milliseconds of each point, increasing; the first point is the start.
        equity: equity at each point.
        position: position held from each point to the next (-1..1; the last one is the position at the end).
        price: the asset's price at each point (nan where unknown, and for a portfolio).
        trades: the round trips, in the order they were opened.
        periods_per_year: points per year, to annualize (:func:`spark_ml.core.trading.analytics.periods_per_year`).
    """

    symbol: str
    ts: NDArray[np.int64]
    equity: F64
    position: F64
    price: F64
    trades: tuple[Trade, ...]
    periods_per_year: float

    def __post_init__(self) -> None:
        n = self.ts.size
        if n < 1:
            raise ValueError(f"{self.symbol}: a book needs at least one point")
        if not (self.equity.size == self.position.size == self.price.size == n):
            raise ValueError(f"{self.symbol}: ts, equity, position and price differ in length")
        if n > 1 and not (np.diff(self.ts) >= 0).all():
            raise ValueError(f"{self.symbol}: timestamps go backwards")
        if not (np.isfinite(self.equity).all() and (self.equity >= 0).all()):
            raise ValueError(f"{self.symbol}: equity must be finite and >= 0")

    @property
    def returns(self) -> F64:
        """Return from each point to the next (length ``n - 1``); 0 after a wiped-out account."""
        eq = self.equity
        out: F64 = np.divide(eq[1:], eq[:-1], out=np.ones(eq.size - 1), where=eq[:-1] > 0) - 1.0
        return out

    @property
    def drawdown(self) -> F64:
        """Drawdown at each point (0 at the start), from :func:`spark_ml.core.trading.analytics.drawdown_series`."""
        return np.concatenate(([0.0], an.drawdown_series(self.returns)))


def book_from_strategy(symbol: str, result: StrategyResult, ts: ArrayLike, prices: ArrayLike) -> Book:
    """A backtested strategy as a book: ``ts`` and ``prices`` are the traded bars (one more than its returns).

    A trade with ``entry`` k and ``exit`` e (indices into the returns) was taken at bar k's close and closed
    at bar e's (see :func:`spark_ml.core.trading.analytics.trades`).
    """
    t = np.asarray(ts, dtype=np.int64).reshape(-1)
    p = np.asarray(prices, dtype=np.float64).reshape(-1)
    if not (t.size == p.size == result.equity.size):
        raise ValueError(f"{t.size} timestamps and {p.size} prices for {result.equity.size} equity points")
    held = result.positions
    position = np.concatenate((held, held[-1:])) if held.size else np.zeros(1)
    tr = result.trades
    trades = tuple(
        Trade(
            symbol=symbol,
            side="long" if held[k] > 0 else "short",
            entry_ts=int(t[k]),
            exit_ts=None if bool(is_open) else int(t[e]),
            entry_price=float(p[k]),
            exit_price=float(p[-1] if is_open else p[e]),
            pnl=float(pnl),
            ret=float(ret),
            is_open=bool(is_open),
        )
        for k, e, pnl, ret, is_open in zip(
            tr.entry.tolist(), tr.exit.tolist(), tr.pnl.tolist(), tr.returns.tolist(), tr.is_open.tolist(), strict=True
        )
    )
    return Book(symbol, t, result.equity.copy(), position, p, trades, result.periods_per_year)


def book_summary(book: Book) -> dict[str, Any]:
    """The book's headline figures, as :meth:`spark_ml.core.trading.backtest.StrategyResult.summary` gives them."""
    ts = book.ts
    tr = book.trades
    idx = np.searchsorted(ts, [ts[0] if t.entry_ts is None else t.entry_ts for t in tr]).astype(np.int64)
    exits = np.array([ts.size - 1 if t.exit_ts is None else np.searchsorted(ts, t.exit_ts) for t in tr], np.int64)
    trades = an.Trades(
        idx,
        exits,
        np.array([t.pnl for t in tr], dtype=np.float64),
        np.array([t.ret for t in tr], dtype=np.float64),
        np.array([t.is_open for t in tr], dtype=np.bool_),
    )
    return summarize(book.returns, book.position[:-1], trades, book.periods_per_year)


def _forward_fill(ts: NDArray[np.int64], book: Book, values: F64, before: float) -> F64:
    """``values`` of ``book`` at each of ``ts``: its last point at or before it, ``before`` ahead of its first."""
    at = np.searchsorted(book.ts, ts, side="right") - 1
    out: F64 = np.where(at >= 0, values[np.maximum(at, 0)], before)
    return out


def portfolio(books: Sequence[Book]) -> Book:
    """The equal-weight portfolio of ``books`` (see the module docstring)."""
    if not books:
        raise ValueError("a portfolio needs at least one book")
    ts = np.unique(np.concatenate([b.ts for b in books]))
    equity = np.mean([_forward_fill(ts, b, b.equity / b.equity[0], 1.0) for b in books], axis=0)
    position = np.mean([_forward_fill(ts, b, b.position, 0.0) for b in books], axis=0)
    periods = an.periods_per_year(ts) if ts.size > 1 and ts[-1] > ts[0] else books[0].periods_per_year
    return Book(PORTFOLIO, ts, equity, position, np.full(ts.size, math.nan), all_trades(books), periods)


def all_trades(books: Sequence[Book]) -> tuple[Trade, ...]:
    """Every book's trades, by entry time (an unknown one first), then symbol."""
    trades = [t for b in books for t in b.trades]
    return tuple(sorted(trades, key=lambda t: (-1 if t.entry_ts is None else t.entry_ts, t.symbol)))


@dataclass(frozen=True, eq=False)
class Table:
    """Columns of plain values (None where a value is missing), in the order of ``columns``.

    Args:
        columns: ``(name, kind)`` pairs, kind one of ``int``, ``float``, ``str``, ``bool``.
        data: column name -> values, all of one length.
    """

    columns: tuple[tuple[str, str], ...]
    data: Mapping[str, list[Any]]

    def __len__(self) -> int:
        return len(self.data[self.columns[0][0]]) if self.columns else 0

    def records(self) -> list[dict[str, Any]]:
        """One dict per row."""
        names = [name for name, _ in self.columns]
        return [dict(zip(names, row, strict=True)) for row in zip(*(self.data[n] for n in names), strict=True)]


def _finite_or_none(values: F64) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def equity_table(book: Book) -> Table:
    """The equity curve of a book as a :data:`EQUITY_COLUMNS` table."""
    ts = book.ts.tolist()
    returns: list[float | None] = [None, *book.returns.tolist()]
    data = {
        "ts": ts,
        "time": [iso_time(t) for t in ts],
        "equity": book.equity.tolist(),
        "return": returns,
        "drawdown": book.drawdown.tolist(),
        "position": _finite_or_none(book.position),
        "price": _finite_or_none(book.price),
    }
    return Table(EQUITY_COLUMNS, data)


def trade_table(trades: Sequence[Trade]) -> Table:
    """Trades as a :data:`TRADE_COLUMNS` table."""
    data: dict[str, list[Any]] = {
        "symbol": [t.symbol for t in trades],
        "side": [t.side for t in trades],
        "entry_ts": [t.entry_ts for t in trades],
        "entry_time": [None if t.entry_ts is None else iso_time(t.entry_ts) for t in trades],
        "exit_ts": [t.exit_ts for t in trades],
        "exit_time": [None if t.exit_ts is None else iso_time(t.exit_ts) for t in trades],
        "entry_price": _finite_or_none(np.array([t.entry_price for t in trades], dtype=np.float64)),
        "exit_price": _finite_or_none(np.array([t.exit_price for t in trades], dtype=np.float64)),
        "pnl": [t.pnl for t in trades],
        "return": _finite_or_none(np.array([t.ret for t in trades], dtype=np.float64)),
        "open": [t.is_open for t in trades],
    }
    return Table(TRADE_COLUMNS, data)


def export_tables(books: Sequence[Book], whole: Book | None = None) -> dict[str, Table]:
    """Every table of an export by its path without extension: ``symbols/<file_token>/equity`` and ``.../trades``
    per book, ``portfolio/equity`` and ``portfolio/trades`` for ``whole`` (default: :func:`portfolio` of the books).
    """
    whole = whole if whole is not None else portfolio(books)
    out: dict[str, Table] = {}
    for b in books:
        out[f"symbols/{file_token(b.symbol)}/equity"] = equity_table(b)
        out[f"symbols/{file_token(b.symbol)}/trades"] = trade_table(b.trades)
    out[f"{PORTFOLIO}/equity"] = equity_table(whole)
    out[f"{PORTFOLIO}/trades"] = trade_table(whole.trades)
    return out

"""The tear sheet: its figures by hand, and the HTML self-contained, complete and equal to the metrics it was given."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spark_ml.core.io.tearsheet import render_html, write_tearsheet
from spark_ml.core.trading import analytics as an
from spark_ml.core.trading import backtest as bt
from spark_ml.core.trading.exports import Book, book_from_strategy, book_summary, portfolio
from spark_ml.core.trading.tearsheet import (
    METRIC_COLUMNS,
    drawdown_periods,
    from_live,
    monthly_returns,
    rolling_sharpe,
)
from tests.support.tearsheet import SECTIONS, TearSheetHtml

DAY = 86_400_000


def test_drawdown_periods_by_hand() -> None:
    # equity 1, 1.1, 0.99, 1.1, 1.2, 1.08, 1.14 -> a 10% fall recovered at point 3, a 10% fall never recovered
    eq = np.array([1.0, 1.1, 0.99, 1.1, 1.2, 1.08, 1.14])
    dd = np.concatenate(([0.0], an.drawdown_series(eq[1:] / eq[:-1] - 1.0)))
    periods = drawdown_periods(dd)
    assert [(p.peak, p.trough, p.recovery) for p in periods] == [(1, 2, 3), (4, 5, None)]
    assert periods[0].depth == pytest.approx(0.1) and periods[1].depth == pytest.approx(0.1)
    assert drawdown_periods(np.zeros(4)) == []
    assert len(drawdown_periods(np.tile([0.0, 0.1], 9))) == 5  # the deepest five only


def test_monthly_returns_compound_each_calendar_month() -> None:
    # points on 30 Jan, 31 Jan, 1 Feb, 2 Feb 2024 and 3 Jan 2025 (UTC)
    ts = np.array([1706572800000, 1706659200000, 1706745600000, 1706832000000, 1735862400000], dtype=np.int64)
    r = np.array([0.1, -0.05, 0.02, 0.03])
    m = monthly_returns(ts, r)
    assert m.years == [2024, 2025]
    assert m.table[0, 0] == pytest.approx(0.1)  # the return earned into 31 Jan
    assert m.table[0, 1] == pytest.approx(0.95 * 1.02 - 1)
    assert m.table[1, 0] == pytest.approx(0.03)
    assert np.isnan(m.table[0, 2:]).all() and np.isnan(m.table[1, 1:]).all()
    assert m.yearly.tolist() == pytest.approx([1.1 * 0.95 * 1.02 - 1, 0.03])


def test_rolling_sharpe_is_the_sharpe_of_each_trailing_window() -> None:
    rng = np.random.default_rng(5)
    r = rng.normal(0.0002, 0.01, 600)
    ts = np.arange(601, dtype=np.int64) * DAY
    rs = rolling_sharpe(ts, r, periods_per_year=252)
    assert rs.window == 21 and rs.span_ms == 21 * DAY
    assert rs.at[0] == 21 and rs.at[-1] == 600
    for end, value in zip(rs.at[::50].tolist(), rs.values[::50].tolist(), strict=True):
        assert value == an.sharpe(r[end - 21 : end], 252)
    short = rolling_sharpe(ts[:11], r[:10], periods_per_year=252)
    assert short.window == 2  # a quarter of a short series, never longer than it


@pytest.fixture
def books() -> list[Book]:
    rng = np.random.default_rng(11)
    out = []
    for k, symbol in enumerate(("EURUSD", "BRK.B")):
        n = 400
        ts = (np.arange(n, dtype=np.int64) + 3 * k) * (DAY // 4) + 1_700_000_000_000
        prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
        positions = bt.positions_from_signals(rng.choice([-1, 0, 1], n, p=[0.1, 0.8, 0.1]), long_short=True)
        res = bt.backtest_positions(prices, positions, periods_per_year=an.periods_per_year(ts), cost_bp=1)
        out.append(book_from_strategy(symbol, res, ts, prices))
    return out


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _live(books: list[Book], **kw):
    whole = portfolio(books)
    metrics = {"portfolio": _finite(book_summary(whole)), **{b.symbol: _finite(book_summary(b)) for b in books}}
    return from_live(whole, books, metrics, **kw)


def test_the_html_is_self_contained_has_every_section_and_the_exact_metrics(books, tmp_path: Path) -> None:
    sheet = _live(books, title="live <portfolio>", lines=["two symbols & a portfolio"])
    path = write_tearsheet(tmp_path / "t" / "tearsheet.html", sheet)
    text = path.read_text()
    parsed = TearSheetHtml()
    parsed.feed(text)
    # Then: nothing outside the file (no URL, no script, no stylesheet link), every figure a PNG data URI
    assert not re.search(r"(?i)\b(?:https?|ftp|file):|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", text)
    assert not parsed.tags & {"script", "link", "iframe", "object", "embed"}
    assert len(parsed.srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in parsed.srcs)
    assert all(s.startswith("data:") for s in parsed.links)
    assert parsed.sections == list(SECTIONS)
    assert "live &lt;portfolio&gt;" in text and "two symbols &amp; a portfolio" in text
    # And the table holds each metric of the portfolio and of each symbol, as book_summary computes it
    expected = {"portfolio": sheet.metrics["portfolio"], **{b.symbol: book_summary(b) for b in books}}
    for row, figures in expected.items():
        for key, _, _ in METRIC_COLUMNS:
            value = figures[key]
            want = None if isinstance(value, float) and not math.isfinite(value) else value
            assert parsed.cells[(row, key)] == want, (row, key)
    assert sheet.metrics["portfolio"]["total_return"] == pytest.approx(an.total_return(sheet.main.returns))
    assert list(sheet.curves) == ["buy and hold (equal weight)", "EURUSD", "BRK.B"]


def test_a_flat_history_still_renders(books) -> None:
    flat = Book("FLAT", books[0].ts[:3], np.ones(3), np.zeros(3), np.array([1.0, 1.0, 1.0]), (), 1000.0)
    sheet = _live([flat], title="flat", lines=[])
    html = render_html(sheet)
    assert "No drawdown" in html and sheet.metrics["portfolio"]["sharpe"] is None
    assert html.count("data:image/png;base64,") == 5

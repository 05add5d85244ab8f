"""The live portfolio: equal and configured weights, steps in data time, joins; figures by the analytics functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_ml.core.trading import analytics as an
from spark_ml.core.trading.live_pnl import PaperPosition
from spark_ml.core.trading.portfolio import Portfolio, parse_weights

H = 3_600_000


def _book(
    prices: dict[str, np.ndarray], weights: dict[str, float] | None = None
) -> tuple[Portfolio, dict[str, PaperPosition]]:
    """Every symbol long from its first bar; all symbols get bar k at ts k * H, one after the other."""
    pf = Portfolio(weights=weights, var_window=10_000)
    pps = {s: PaperPosition() for s in prices}
    n = len(next(iter(prices.values())))
    for k in range(n):
        for s, p in prices.items():
            pf.advance(k * H)
            pps[s].update(float(p[k]), ts=k * H)
            if k == 0:
                pps[s].on_signal("buy")
            pf.mark(s, pps[s].equity)
    return pf, pps


def _prices(seed: int, n: int = 200) -> np.ndarray:
    return 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, n)))


def test_equal_weights_are_the_mean_account_and_the_analytics_functions() -> None:
    # Given two symbols held long from their first bar
    prices = {"A": _prices(1), "B": _prices(2)}
    pf, pps = _book(prices)
    fig = pf.figures(pps.items())
    # Then the book's equity is the mean of the two accounts, which is the index while nobody joined late
    eq = {s: p / p[0] for s, p in prices.items()}
    book = (eq["A"] + eq["B"]) / 2
    assert fig["equity"] == pytest.approx(book[-1]) and fig["index"] == pytest.approx(book[-1])
    assert fig["pnl"] == pytest.approx(fig["realizedPnl"] + fig["unrealizedPnl"])
    assert fig["symbols"] == 2 and fig["weights"] == "equal" and fig["trades"] == 2 and fig["position"] == 1.0
    # And its risk figures are the analytics functions of the book's per-bar returns (the open bar excluded)
    r = book[1:-1] / book[:-2] - 1
    assert fig["window"] == r.size
    assert fig["maxDrawdown"] == pytest.approx(an.max_drawdown(book[1:] / book[:-1] - 1))
    assert fig["var95"] == pytest.approx(an.var_historical(r, 0.95))
    assert fig["var99Parametric"] == pytest.approx(an.var_parametric(r, 0.99))
    assert fig["sharpe"] == pytest.approx(an.sharpe(r, an.MS_PER_YEAR / H))
    assert fig["sortino"] == pytest.approx(an.sortino(r, an.MS_PER_YEAR / H))
    assert fig["exposure"] == pytest.approx(1.0) and fig["asOf"] == 199 * H


def test_configured_weights_leave_out_symbols_not_named() -> None:
    prices = {"A": _prices(1), "B": _prices(2), "C": _prices(3)}
    pf, pps = _book(prices, weights={"A": 3.0, "B": 1.0})
    fig = pf.figures(pps.items())
    eq = {s: p[-1] / p[0] for s, p in prices.items()}
    assert fig["equity"] == pytest.approx((3 * eq["A"] + eq["B"]) / 4)
    assert fig["symbols"] == 2 and fig["weights"] == "configured" and fig["trades"] == 2


def test_a_symbol_joining_late_makes_no_return() -> None:
    pf = Portfolio()
    a, b = PaperPosition(), PaperPosition()
    a.update(100.0, ts=0)
    a.on_signal("buy")
    pf.advance(0)
    pf.mark("A", a.equity)
    for k, price in enumerate((110.0, 121.0), start=1):
        pf.advance(k * H)
        a.update(price, ts=k * H)
        pf.mark("A", a.equity)
    # B joins at equity 1 while A stands at 1.21: the book's equity falls to the mean, its index does not
    pf.advance(3 * H)
    b.update(50.0, ts=3 * H)
    pf.mark("B", b.equity)
    fig = pf.figures([("A", a), ("B", b)])
    assert fig["equity"] == pytest.approx((1.21 + 1.0) / 2)
    assert fig["index"] == pytest.approx(1.21) and fig["maxDrawdown"] == 0.0 and fig["drawdown"] == 0.0


def test_state_round_trip() -> None:
    prices = {"A": _prices(4), "B": _prices(5)}
    pf, pps = _book(prices)
    again = Portfolio(var_window=10_000)
    again.restore(pf.state(), pps)
    assert again.figures(pps.items()) == pf.figures(pps.items())
    assert again.export(pps.items())["equityCurve"] == pf.export(pps.items())["equityCurve"]


def test_an_empty_book() -> None:
    fig = Portfolio().figures([])
    assert fig["symbols"] == 0 and fig["equity"] == 1.0 and fig["sharpe"] is None and fig["winRate"] is None
    assert all(not (type(v) is float and not math.isfinite(v)) for v in fig.values())


def test_parse_weights() -> None:
    assert parse_weights("EURUSD=0.6, GBPUSD=0.4") == {"EURUSD": 0.6, "GBPUSD": 0.4}
    assert parse_weights("") == {}
    for bad in ("EURUSD", "EURUSD=x", "A=-1", "A=0", "A=nan"):
        with pytest.raises(ValueError):
            parse_weights(bad)

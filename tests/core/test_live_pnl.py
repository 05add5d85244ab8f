"""The live paper position: by hand, and step for step against the vectorized backtest."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_ml.core.engine import SignalPolicy
from spark_ml.core.trading import analytics as an
from spark_ml.core.trading import backtest as bt
from spark_ml.core.trading.live_pnl import PaperPosition


def test_long_round_trip_by_hand() -> None:
    pp = PaperPosition()
    pp.update(100.0, ts=1)
    pp.on_signal("buy")
    pp.update(110.0, ts=2)
    s = pp.snapshot()
    assert (s.position, s.trades, s.ts) == (1, 1, 2)
    assert s.equity == pytest.approx(1.1) and s.unrealized_pnl == pytest.approx(0.1) and s.realized_pnl == 0
    assert s.win_rate == 1.0 and s.profit_factor == math.inf
    pp.on_signal("hold")
    pp.on_signal("sell")  # long/flat: sell closes
    pp.update(99.0, ts=3)
    s = pp.snapshot()
    assert s.position == 0 and s.realized_pnl == pytest.approx(0.1) and s.unrealized_pnl == 0.0
    assert s.equity == pytest.approx(1.1) and s.drawdown == 0.0 and s.last_signal == "sell"


def test_short_and_drawdown_by_hand() -> None:
    pp = PaperPosition(long_short=True)
    pp.update(100.0)
    pp.on_signal("sell")
    pp.update(120.0)  # short loses 20%
    pp.update(90.0)  # back to +10%
    s = pp.snapshot()
    assert s.position == -1 and s.equity == pytest.approx(1.1)
    assert s.max_drawdown == pytest.approx(0.2) and s.drawdown == 0.0
    pp.on_signal("buy")  # flip: closes the short with +0.1, opens a long
    s = pp.snapshot()
    assert s.position == 1 and s.realized_pnl == pytest.approx(0.1) and s.trades == 2


def test_costs_by_hand() -> None:
    pp = PaperPosition(cost_bp=100)
    pp.update(1.0)
    pp.on_signal("buy")
    pp.update(1.0)
    assert pp.snapshot().equity == pytest.approx(0.99)
    pp.on_signal("sell")
    s = pp.snapshot()
    assert s.equity == pytest.approx(0.99 * 0.99) and s.realized_pnl == pytest.approx(0.99 * 0.99 - 1)
    assert s.win_rate == 0.0 and s.profit_factor == 0.0


def test_signal_before_any_price_waits_for_the_first_price() -> None:
    pp = PaperPosition()
    pp.on_signal("buy")
    assert pp.snapshot().position == 0 and math.isnan(pp.snapshot().price)
    pp.update(50.0)
    pp.update(55.0)
    assert pp.snapshot().position == 1 and pp.snapshot().equity == pytest.approx(1.1)


def test_a_short_that_loses_everything_stops_at_zero() -> None:
    pp = PaperPosition(long_short=True)
    pp.update(1.0)
    pp.on_signal("sell")
    pp.update(2.5)
    s = pp.snapshot()
    assert s.equity == 0.0 and s.position == 0 and s.realized_pnl == pytest.approx(-1.0)
    assert s.max_drawdown == pytest.approx(1.0)


def test_wire_is_camel_case_without_nan() -> None:
    w = PaperPosition().snapshot().wire()
    assert {"realizedPnl", "unrealizedPnl", "maxDrawdown", "var95", "var99", "winRate", "profitFactor"} <= set(w)
    assert w["winRate"] is None and w["price"] is None and w["var95"] is None and w["trades"] == 0


def test_rejects_bad_input() -> None:
    pp = PaperPosition()
    with pytest.raises(ValueError):
        pp.update(0.0)
    with pytest.raises(ValueError):
        pp.update(math.nan)
    with pytest.raises(ValueError):
        pp.on_signal("short")
    with pytest.raises(ValueError):
        PaperPosition(var_window=1)


@pytest.mark.parametrize("long_short", [False, True])
@pytest.mark.parametrize("cost_bp", [0.0, 3.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_vectorized_backtest(long_short: bool, cost_bp: float, seed: int) -> None:
    # Given a price series and model scores, fed bar by bar: price first, then the signal computed at that bar
    rng = np.random.default_rng(seed)
    n = 600
    prices = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    scores = rng.uniform(0.3, 0.7, n)
    policy = SignalPolicy(margin=0.1)
    pp = PaperPosition(cost_bp=cost_bp, long_short=long_short, var_window=n)
    equity = []
    for i, (price, signal) in enumerate(zip(prices, policy.signals(scores), strict=True)):
        pp.update(float(price))
        equity.append(pp.snapshot().equity)
        if i < n - 1:  # the backtest has no next bar for the last signal to act on
            pp.on_signal(signal)
    res = bt.backtest_scores(
        prices, scores, periods_per_year=6000, policy=policy, long_short=long_short, cost_bp=cost_bp
    )
    # Then equity matches at every bar, and so does every figure of the snapshot
    np.testing.assert_allclose(equity, res.equity, rtol=1e-10)
    s, summary = pp.snapshot(), res.summary()
    assert s.trades == summary["trades"] > 10
    assert s.realized_pnl == pytest.approx(res.trades.realized, abs=1e-10)
    assert s.unrealized_pnl == pytest.approx(res.trades.unrealized, abs=1e-10)
    assert s.win_rate == pytest.approx(summary["win_rate"])
    assert s.profit_factor == pytest.approx(summary["profit_factor"])
    assert s.max_drawdown == pytest.approx(summary["max_drawdown"])
    assert s.var_95 == pytest.approx(summary["var_95"])
    assert s.var_99 == pytest.approx(summary["var_99"])
    assert s.var_95_parametric == pytest.approx(summary["var_95_parametric"], rel=1e-6)


def test_var_uses_the_last_window_only() -> None:
    rng = np.random.default_rng(4)
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    pp = PaperPosition(var_window=50)
    pp.update(float(prices[0]))
    pp.on_signal("buy")
    for p in prices[1:]:
        pp.update(float(p))
    r = prices[1:] / prices[:-1] - 1
    s = pp.snapshot()
    assert s.var_95 == pytest.approx(an.var_historical(r[-50:], 0.95))
    assert s.var_95_parametric == pytest.approx(an.var_parametric(r[-50:], 0.95), rel=1e-6)


@given(st.lists(st.floats(0.5, 2.0), min_size=3, max_size=40), st.integers(2, 50))
def test_var_equals_numpy_quantiles_for_any_window(prices: list[float], window: int) -> None:
    pp = PaperPosition(var_window=window)
    pp.update(prices[0])
    pp.on_signal("buy")
    for p in prices[1:]:
        pp.update(p)
    r = (np.array(prices[1:]) / np.array(prices[:-1]) - 1)[-window:]
    s = pp.snapshot()
    assert s.var_95 == pytest.approx(an.var_historical(r, 0.95), abs=1e-12)
    assert s.var_99 == pytest.approx(an.var_historical(r, 0.99), abs=1e-12)

"""Each analytics formula against a series whose answer is known by hand, then against empyrical."""

from __future__ import annotations

import math

import empyrical as ep  # type: ignore[import-untyped]
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import norm

from spark_ml.core.trading import analytics as an

Z95 = 1.6448536269514722  # standard normal quantile at 0.95, from tables
Z99 = 2.3263478740408408


# --- by hand -------------------------------------------------------------------------------------------


def test_equity_total_return_and_drawdown_by_hand() -> None:
    # Given +10%, -20%, +25%: equity 1.1, 0.88, 1.1
    r = [0.10, -0.20, 0.25]
    np.testing.assert_allclose(an.equity_curve(r), [1.1, 0.88, 1.1])
    np.testing.assert_allclose(an.equity_curve(r, start=100.0), [110.0, 88.0, 110.0])
    assert an.total_return(r) == pytest.approx(0.10)
    # the fall from 1.1 to 0.88 is 20% of the peak, and the recovery ends the drawdown
    np.testing.assert_allclose(an.drawdown_series(r), [0.0, 0.2, 0.0], atol=1e-12)
    assert an.max_drawdown(r) == pytest.approx(0.2)


def test_drawdown_counts_the_start_as_a_peak() -> None:
    # Given a first bar that loses: the peak is the starting equity, not the first bar's
    assert an.max_drawdown([-0.5, 0.1]) == pytest.approx(0.5)
    assert an.max_drawdown([0.01, 0.02]) == 0.0
    assert an.max_drawdown([]) == 0.0


def test_sharpe_by_hand() -> None:
    # mean 0.02, std(ddof=1) = 0.01*sqrt(2): Sharpe sqrt(2) per bar, doubled by 4 periods a year
    assert an.sharpe([0.01, 0.03], periods=1) == pytest.approx(math.sqrt(2))
    assert an.sharpe([0.01, 0.03], periods=4) == pytest.approx(2 * math.sqrt(2))
    assert math.isnan(an.sharpe([0.01, 0.01, 0.01], periods=252))
    assert math.isnan(an.sharpe([0.01], periods=252))


def test_sortino_by_hand() -> None:
    # mean 0.005, downside deviation sqrt((0 + 1e-4 + 0 + 1e-4) / 4) = sqrt(5e-5)
    r = [0.02, -0.01, 0.02, -0.01]
    assert an.sortino(r, periods=1) == pytest.approx(0.005 / math.sqrt(5e-5))
    assert an.sortino(r, periods=1) == pytest.approx(1 / math.sqrt(2))
    assert an.sortino(r, periods=9) == pytest.approx(3 / math.sqrt(2))
    assert an.sortino([0.01, 0.02], periods=1) == math.inf


def test_historical_var_by_hand() -> None:
    # 101 returns from -50% to +50% in steps of 1%: the 5% quantile is the 6th smallest, -45%
    r = np.linspace(-0.5, 0.5, 101)
    np.random.default_rng(1).shuffle(r)
    assert an.var_historical(r, 0.95) == pytest.approx(0.45)
    assert an.var_historical(r, 0.99) == pytest.approx(0.49)
    # a series that never loses has no value at risk
    assert an.var_historical([0.01, 0.02, 0.03], 0.95) == 0.0
    with pytest.raises(ValueError):
        an.var_historical(r, 95)


def test_parametric_var_by_hand() -> None:
    # mean 0, std(ddof=1) = 0.01*sqrt(2)
    r = [-0.01, 0.01]
    assert an.var_parametric(r, 0.95) == pytest.approx(Z95 * 0.01 * math.sqrt(2))
    assert an.var_parametric(r, 0.99) == pytest.approx(Z99 * 0.01 * math.sqrt(2))


def test_periods_per_year_counts_bars() -> None:
    day = 86_400_000
    assert an.periods_per_year(np.arange(1000) * day) == pytest.approx(365.25)
    # five bars a week (weekends closed) -> about 261 a year
    weekdays = [d * day for d in range(7 * 200) if d % 7 < 5]
    assert an.periods_per_year(weekdays) == pytest.approx(5 / 7 * 365.25, rel=0.01)
    with pytest.raises(ValueError):
        an.periods_per_year([5])


def test_strategy_returns_and_costs_by_hand() -> None:
    # long, long, flat at 1% cost: pay 1% to enter, earn 10%, pay 1% to leave
    pos, ar = [1, 1, 0], [0.10, 0.0, 0.0]
    r = an.strategy_returns(pos, ar, cost_rate=0.01)
    np.testing.assert_allclose(r, [0.99 * 1.1 - 1, 0.0, -0.01])
    np.testing.assert_allclose(an.turnover([1, -1, -1, 0]), [1, 2, 0, 1])
    # a short keeps its units: the price goes 1 -> 1.05 -> 0.945, equity 1 -> 0.95 -> 1.055
    np.testing.assert_allclose(an.strategy_returns([-1, -1], [0.05, -0.10]), [-0.05, 1.055 / 0.95 - 1])
    # a long is the asset itself
    np.testing.assert_allclose(an.strategy_returns([1, 1, 1], [0.05, -0.10, 0.2]), [0.05, -0.10, 0.2])
    # a short that more than doubles against it is wiped out and stays at zero
    np.testing.assert_allclose(an.equity_curve(an.strategy_returns([-1, -1, 1], [1.5, 0.1, 0.1])), [0, 0, 0])
    with pytest.raises(ValueError):
        an.strategy_returns([1], [0.1, 0.2])
    with pytest.raises(ValueError):
        an.strategy_returns([0.5], [0.1])


def test_trades_without_costs_by_hand() -> None:
    # long 2 bars (x1.1, x0.9: -1%), flat, short 2 bars (price x0.9 then x1.1 = -1%: the short gains 1% of
    # 0.99), long 1 bar (+20% of 0.9999) still open
    pos = [1, 1, 0, -1, -1, 1]
    ar = [0.1, -0.1, 0.5, -0.1, 0.1, 0.2]
    t = an.trades(pos, ar)
    assert len(t) == 3
    np.testing.assert_array_equal(t.entry, [0, 3, 5])
    np.testing.assert_array_equal(t.exit, [2, 5, 6])
    np.testing.assert_allclose(t.pnl, [-0.01, 0.0099, 0.19998], atol=1e-12)
    np.testing.assert_allclose(t.returns, [-0.01, 0.01, 0.2], atol=1e-12)
    np.testing.assert_array_equal(t.is_open, [False, False, True])
    assert t.realized == pytest.approx(-0.0001)
    assert t.unrealized == pytest.approx(0.19998)
    assert an.win_rate(t.pnl) == pytest.approx(2 / 3)
    assert an.profit_factor(t.pnl) == pytest.approx((0.0099 + 0.19998) / 0.01)
    assert an.exposure(pos) == pytest.approx(5 / 6)


def test_flip_splits_its_cost_between_the_two_trades() -> None:
    # long then short at 1%: entry 0.01, then a flip costing 2% of 0.99 (half closes, half opens)
    t = an.trades([1, -1], [0.0, 0.0], cost_rate=0.01)
    np.testing.assert_allclose(t.pnl, [-0.01 - 0.0099, -0.0099])
    assert t.realized + t.unrealized == pytest.approx(0.99 * 0.98 - 1)


def test_no_trades() -> None:
    t = an.trades([0, 0, 0], [0.1, -0.1, 0.2])
    assert len(t) == 0 and t.realized == 0.0 and t.unrealized == 0.0
    assert math.isnan(an.win_rate(t.pnl)) and math.isnan(an.profit_factor(t.pnl))
    assert an.profit_factor([0.1, 0.2]) == math.inf
    assert an.profit_factor([0.3, -0.1, -0.05]) == pytest.approx(2.0)
    assert an.win_rate([0.3, -0.1, -0.05, 0.0]) == pytest.approx(0.25)


SEEDS = st.integers(0, 2**32 - 1)
COSTS = st.floats(0.0, 0.01)


def _positions(most: int) -> st.SearchStrategy[np.ndarray]:
    """Up to ``most`` positions, each short, flat or long."""
    return arrays(np.int64, st.integers(1, most), elements=st.integers(-1, 1))


def _returns(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.02, n)


@given(pos=_positions(60), seed=SEEDS, cost=COSTS)
def test_realized_plus_unrealized_is_the_equity_change(pos: np.ndarray, seed: int, cost: float) -> None:
    ar = _returns(seed, pos.size)
    t = an.trades(pos, ar, cost_rate=cost, start=100.0)
    eq = an.equity_curve(an.strategy_returns(pos, ar, cost), start=100.0)
    assert t.realized + t.unrealized == pytest.approx(eq[-1] - 100.0, abs=1e-9)
    assert len(t) == int(np.sum((pos != 0) & (pos != np.concatenate(([0], pos[:-1])))))
    assert t.is_open.sum() == (1 if pos[-1] != 0 else 0)


def _loop_trades(pos: list[int], ar: list[float], cost: float) -> tuple[list[float], list[float], float]:
    """A plain loop over bars with cash and units, written independently of the vectorized version."""
    price, cash, units, prev = 1.0, 1.0, 0.0, 0
    out: list[float] = []
    began: list[float] = []
    entry_eq = 0.0
    for p, a in zip(pos, ar, strict=True):
        if p != prev:
            eq = cash + units * price
            if prev != 0:
                out.append(eq * (1 - cost) - entry_eq)  # close: sell/buy back the units, pay the exit cost
            entry_eq = eq * (1 - cost * abs(prev))  # equity after the old trade's exit, before this entry
            if p != 0:
                began.append(entry_eq)
            eq *= 1 - cost * abs(p - prev)
            units = p * eq / price
            cash = eq - units * price
        price *= 1 + a
        prev = p
    eq = cash + units * price
    if prev != 0:
        out.append(eq - entry_eq)
    return out, [pnl / b for pnl, b in zip(out, began, strict=True)], eq


@given(pos=_positions(40), seed=SEEDS, cost=COSTS)
def test_trades_match_a_plain_loop(pos: np.ndarray, seed: int, cost: float) -> None:
    ar = _returns(seed, pos.size)
    pnl, rets, eq = _loop_trades(pos.tolist(), ar.tolist(), cost)
    t = an.trades(pos, ar, cost)
    np.testing.assert_allclose(t.pnl, pnl, atol=1e-12)
    np.testing.assert_allclose(t.returns, rets, atol=1e-12)
    assert an.equity_curve(an.strategy_returns(pos, ar, cost))[-1] == pytest.approx(eq)


# --- against empyrical (reference library) ------------------------------------------------------------


@pytest.fixture(params=[0, 1, 2])
def returns(request: pytest.FixtureRequest) -> np.ndarray:
    rng = np.random.default_rng(request.param)
    return rng.standard_t(4, 750) * 0.01 + 0.0003


@pytest.mark.parametrize("periods", [12.0, 252.0, 6200.0])
def test_ratios_match_empyrical(returns: np.ndarray, periods: float) -> None:
    assert an.sharpe(returns, periods) == pytest.approx(ep.sharpe_ratio(returns, annualization=periods))
    assert an.sortino(returns, periods) == pytest.approx(ep.sortino_ratio(returns, annualization=periods))


def test_return_and_drawdown_match_empyrical(returns: np.ndarray) -> None:
    assert an.total_return(returns) == pytest.approx(ep.cum_returns_final(returns))
    np.testing.assert_allclose(an.equity_curve(returns), ep.cum_returns(returns, starting_value=1.0))
    assert an.max_drawdown(returns) == pytest.approx(-ep.max_drawdown(returns))


@pytest.mark.parametrize("level", [0.95, 0.99])
def test_var_matches_empyrical_and_scipy(returns: np.ndarray, level: float) -> None:
    assert an.var_historical(returns, level) == pytest.approx(-ep.value_at_risk(returns, 1 - level))
    gaussian = -(returns.mean() + norm.ppf(1 - level) * returns.std(ddof=1))
    assert an.var_parametric(returns, level) == pytest.approx(gaussian)

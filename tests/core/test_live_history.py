"""The live account's histories (equity curve, trades), exposure, Sharpe inputs and checkpoints vs the backtest."""

from __future__ import annotations

import math
from dataclasses import astuple

import msgpack
import numpy as np
import pytest

from spark_ml.core.engine import SignalPolicy
from spark_ml.core.trading import analytics as an
from spark_ml.core.trading import backtest as bt
from spark_ml.core.trading.live_history import ClosedTrade, EquityCurve
from spark_ml.core.trading.live_pnl import PaperPosition


def _series(seed: int, n: int = 600) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    prices = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    return prices, SignalPolicy(margin=0.1).signals(rng.uniform(0.3, 0.7, n))


def _feed(pp: PaperPosition, prices: np.ndarray, signals: list[str], start: int = 0, ts0: int = 0) -> None:
    n = len(prices)
    for i in range(start, n):
        pp.update(float(prices[i]), ts=ts0 + i * 3_600_000)
        if i < n - 1:
            pp.on_signal(signals[i])


def test_curve_keeps_the_whole_history_in_bounded_points() -> None:
    curve = EquityCurve(8)
    for i in range(100):
        curve.add(i, float(i))
    pts = curve.points()
    assert 4 <= len(curve) <= 8 and pts[0] == (0, 0.0) and pts[-1] == (99, 99.0)
    ts = [t for t, _ in pts[:-1]]
    assert ts == list(range(0, 100, curve.stride))[: len(ts)] and curve.stride == 16
    with pytest.raises(ValueError):
        EquityCurve(3)


def test_a_paper_positions_curve_carries_the_price_for_buy_and_hold() -> None:
    prices, signals = _series(2, n=50)
    pp = PaperPosition(curve_points=8)
    _feed(pp, prices, signals)
    pts = pp.curve.points()
    assert all(len(p) == 3 for p in pts) and pts[-1] == (49 * 3_600_000, pp.equity, prices[-1])
    assert [p[2] for p in pts[:-1]] == [prices[t // 3_600_000] for t, _, _ in pts[:-1]]


@pytest.mark.parametrize("long_short", [False, True])
@pytest.mark.parametrize("cost_bp", [0.0, 3.0])
def test_trade_list_and_exposure_match_the_backtest(long_short: bool, cost_bp: float) -> None:
    # Given the same prices and signals fed to a paper position and to the vectorized backtest
    prices, signals = _series(7)
    pp = PaperPosition(cost_bp=cost_bp, long_short=long_short, var_window=len(prices), trades_kept=10_000)
    _feed(pp, prices, signals)
    res = bt.backtest_scores(
        prices,
        np.asarray([{"buy": 0.9, "sell": 0.1, "hold": 0.5}[s] for s in signals]),
        periods_per_year=6000,
        policy=SignalPolicy(margin=0.1),
        long_short=long_short,
        cost_bp=cost_bp,
    )
    # Then every trade's PnL and return, its side, and the exposure are the backtest's
    trades = pp.trade_list()
    assert len(trades) == len(res.trades) == pp.n_trades > 10
    np.testing.assert_allclose([t.pnl for t in trades], res.trades.pnl, atol=1e-10)
    np.testing.assert_allclose([t.ret for t in trades], res.trades.returns, rtol=1e-9)
    assert [t.exit_ts is None for t in trades] == list(res.trades.is_open)
    assert pp.exposure == pytest.approx(an.exposure(res.positions))
    # And each closed trade's entry and exit prices are the bars it opened and closed at
    for t, entry, exit_ in zip(trades, res.trades.entry, res.trades.exit, strict=True):
        assert t.entry_price == pytest.approx(prices[entry]) and t.entry_ts == entry * 3_600_000
        if t.exit_ts is not None:
            assert t.exit_price == pytest.approx(prices[exit_]) and t.exit_ts == exit_ * 3_600_000


def test_the_trade_list_keeps_the_most_recent_only() -> None:
    prices, signals = _series(3)
    pp = PaperPosition(trades_kept=5)
    _feed(pp, prices, signals)
    trades = pp.trade_list()
    closed = [t for t in trades if t.exit_ts is not None]
    assert len(closed) == 5 and pp.n_trades > 10
    assert [t.exit_ts for t in closed] == sorted(t.exit_ts or 0 for t in closed)


def test_returns_window_and_periods_per_year_give_the_analytics_sharpe() -> None:
    prices, signals = _series(5, n=300)
    pp = PaperPosition(var_window=100)
    _feed(pp, prices, signals)
    eq = [p[1] for p in pp.curve.points()]
    r = np.asarray(eq[1:]) / np.asarray(eq[:-1]) - 1
    np.testing.assert_allclose(pp.returns(), r[-100:], atol=1e-12)
    # hourly timestamps without gaps: 8766 updates a year
    assert pp.periods_per_year() == pytest.approx(an.MS_PER_YEAR / 3_600_000)


def test_state_round_trip_continues_exactly_as_an_uninterrupted_position() -> None:
    # Given one position fed a whole series, and another saved halfway (through msgpack) and restored
    prices, signals = _series(11)
    whole = PaperPosition(cost_bp=2.0, long_short=True, var_window=50, trades_kept=7, curve_points=16)
    _feed(whole, prices, signals)
    half = PaperPosition(cost_bp=2.0, long_short=True, var_window=50, trades_kept=7, curve_points=16)
    for i in range(300):
        half.update(float(prices[i]), ts=i * 3_600_000)
        half.on_signal(signals[i])
    assert half.position != 0 and half.n_trades > 3
    state = msgpack.unpackb(msgpack.packb(half.state()), raw=False)
    restored = PaperPosition.from_state(state)
    # When the restored one gets the rest
    for i in range(300, len(prices)):
        restored.update(float(prices[i]), ts=i * 3_600_000)
        if i < len(prices) - 1:
            restored.on_signal(signals[i])
    # Then it ends exactly where the uninterrupted one does: figures, trades, curve, exposure
    assert restored.snapshot() == whole.snapshot()
    assert restored.trade_list() == whole.trade_list()
    assert restored.curve.points() == whole.curve.points()
    assert restored.exposure == whole.exposure and restored.periods_per_year() == whole.periods_per_year()
    with pytest.raises(ValueError):
        PaperPosition.from_state({**state, "v": 99})


def test_a_new_position_has_no_figures_yet() -> None:
    pp = PaperPosition()
    assert math.isnan(pp.exposure) and math.isnan(pp.periods_per_year()) and pp.trade_list() == []
    assert pp.curve.points() == []


@pytest.mark.parametrize("exit_ts", [None, 1_700_000_360_000])
def test_a_trades_state_is_its_fields_in_order_and_reads_back(exit_ts: int | None) -> None:
    trade = ClosedTrade(-1, 1_700_000_000_000, 1.1, exit_ts, 1.2, -0.05, float("nan") if exit_ts is None else -0.04)
    assert trade.state()[:6] == list(astuple(trade))[:6]  # the reference: dataclasses' own field order
    back = ClosedTrade.from_state(msgpack.unpackb(msgpack.packb(trade.state())))
    assert back.state()[:6] == trade.state()[:6]
    assert math.isnan(back.ret) if exit_ts is None else back.ret == trade.ret

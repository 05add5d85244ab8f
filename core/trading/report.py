"""The ML model, the baseline and buy-and-hold side by side on a walk-forward out-of-sample period.

The period is the union of the walk-forward test blocks (contiguous, from the end of the first training
window to the last bar). A bar's ML score always comes from a model fitted on rows strictly before its
fold (:func:`spark_ml.core.ml.training.walk_forward_eval`); the baseline needs no fitting. Bar ``j``'s
signal is traded from its close to the next one, so the prices run one bar past the last test row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.engine import SignalPolicy
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.training import WalkForward
from spark_ml.core.trading import analytics as an
from spark_ml.core.trading import backtest as bt

__all__ = ["Comparison", "compare", "describe", "table"]

_LEFT_OUT = frozenset({"var_99", "var_95_parametric", "realized_pnl", "unrealized_pnl"})
"""Figures the side-by-side table leaves to the tear sheet (it stays narrow enough for a terminal)."""
_COLUMNS = tuple(c for c in bt.METRIC_COLUMNS if c[0] not in _LEFT_OUT)


@dataclass(frozen=True)
class Comparison:
    """The three strategies on one out-of-sample period.

    Args:
        doc: the report as JSON data (what ``spark-ml backtest --json`` prints, without ``files``).
        results: each strategy's returns and equity, by name.
        ts: epoch milliseconds of the traded bars (one more than each strategy's returns).
        prices: the closes of the traded bars, beside ``ts``.
    """

    doc: dict[str, Any]
    results: dict[str, bt.StrategyResult]
    ts: NDArray[np.int64]
    prices: NDArray[np.float64]


def compare(
    ds: Dataset,
    wf: WalkForward,
    *,
    label: str,
    cost_bp: float,
    slippage_bp: float,
    margin: float,
    long_short: bool,
) -> Comparison:
    """Backtest the walk-forward scores of ``wf`` (ML and baseline) and buy-and-hold; ``label`` names the model."""
    bars, _, ml, base = wf.oos()
    if not (np.diff(bars) == 1).all():
        raise ValueError("walk-forward test blocks are not contiguous")
    prices = ds.close[bars[0] : bars[-1] + 2]
    ts = ds.ts[bars[0] : bars[-1] + 2]
    periods = an.periods_per_year(ts)
    common: dict[str, Any] = {
        "periods_per_year": periods,
        "policy": SignalPolicy(margin=margin),
        "long_short": long_short,
        "cost_bp": cost_bp,
        "slippage_bp": slippage_bp,
    }
    results = {
        "ml": bt.backtest_scores(prices, np.append(ml, 0.5), name="ml", **common),
        "baseline": bt.backtest_scores(prices, np.append(base, 0.5), name="baseline", **common),
        "buy_and_hold": bt.buy_and_hold(prices, periods_per_year=periods, cost_bp=cost_bp, slippage_bp=slippage_bp),
    }
    doc = {
        "data": ds.name,
        "symbol": ds.symbol,
        "period": {"start": _iso(int(ts[0])), "end": _iso(int(ts[-1])), "bars": int(ts.size)},
        "periods_per_year": periods,
        "costs": {"cost_bp": cost_bp, "slippage_bp": slippage_bp},
        "signals": {"margin": margin, "long_short": long_short},
        "models": {"ml": label, "baseline": "baseline (fixed weights, nothing fitted)"},
        "folds": [f.fold.as_dict() for f in wf.folds],
        "auc": _finite({"ml": wf.metrics.get("auc", math.nan), "baseline": wf.baseline_metrics.get("auc", math.nan)}),
        "strategies": {name: _finite(res.summary()) for name, res in results.items()},
    }
    return Comparison(doc, results, ts, np.asarray(prices, dtype=np.float64))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat().replace("+00:00", "Z")


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """Undefined or unbounded figures (nan, inf) become null: JSON has no such numbers."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def table(doc: dict[str, Any]) -> str:
    """The strategies side by side as a Markdown table."""
    head = "| strategy | " + " | ".join(title for _, title, _ in _COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(_COLUMNS)
    lines = [head, rule]
    for name, s in doc["strategies"].items():
        lines.append(f"| {name} | " + " | ".join(bt.metric_text(s[k], kind) for k, _, kind in _COLUMNS) + " |")
    return "\n".join(lines)


def describe(doc: dict[str, Any]) -> str:
    """Data, period, costs, signal rule and the ML model, in three lines."""
    period, costs, sig = doc["period"], doc["costs"], doc["signals"]
    return "\n".join(
        [
            f"Backtest on {doc['data']} ({doc['symbol']}), walk-forward out-of-sample "
            f"{period['start']} .. {period['end']} ({period['bars']} bars, {doc['periods_per_year']:.0f} a year)",
            f"costs {costs['cost_bp']} bp + slippage {costs['slippage_bp']} bp per unit of position moved; "
            f"signal margin {sig['margin']}; {'long/short' if sig['long_short'] else 'long/flat'}",
            f"ml: {doc['models']['ml']}",
        ]
    )

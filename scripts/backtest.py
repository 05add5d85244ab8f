"""``spark-ml backtest``: the ML model, the baseline and buy-and-hold on the walk-forward out-of-sample period.

Usage::

    spark-ml backtest --data {eurusd,goog,btcusd,synthetic,PATH} [--version V] [--registry PATH]
                      [--cost-bp X] [--slippage-bp Y] [--margin M] [--long-short] [--json] [--out DIR]

The period is the union of the walk-forward test blocks of :func:`spark_ml.core.ml.evaluate.walk_forward` (contiguous,
from the end of the first training window to the last bar). The ML strategy's score for a bar always comes
from a model fitted on rows strictly before that bar's fold (with the fold's gap): the registry version's
recipe (model family, parameters, seed, folds) is refitted on each fold's training rows by
:func:`spark_ml.core.ml.training.walk_forward_eval`, as ``spark-ml eval`` does, because the stored artifact itself may
have been trained on the very bars being tested. When the active version is the baseline, a LightGBM model
with default parameters is refitted the same way. The baseline needs no fitting.

Writes ``backtest.json``, ``backtest.md`` (the table) and ``equity.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from spark_ml.core.engine import SignalPolicy
from spark_ml.core.errors import SparkMlError
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.evaluate import choose_folds
from spark_ml.core.ml.sources import load
from spark_ml.core.ml.training import WalkForward, walk_forward_eval
from spark_ml.core.models import BASELINE_VERSION
from spark_ml.core.trading import analytics as an
from spark_ml.core.trading import backtest as bt

__all__ = ["main"]

DEFAULT_OUT = Path("reports")
STRATEGIES = ("ml", "baseline", "buy_and_hold")
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "total return", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "max drawdown", "pct"),
    ("var_95", "VaR 95%", "pct"),
    ("win_rate", "win rate", "pct"),
    ("profit_factor", "profit factor", "num"),
    ("trades", "trades", "int"),
    ("exposure", "exposure", "pct"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spark-ml backtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="eurusd", help="eurusd | goog | btcusd | synthetic | PATH to an OHLCV CSV")
    p.add_argument("--version", default=None, help="registry version of the ML model (default: the active one)")
    p.add_argument("--registry", type=Path, default=None, help="registry location (default: SPARK_ML_REGISTRY)")
    p.add_argument("--cost-bp", type=float, default=1.0, help="cost per position change, basis points (default 1)")
    p.add_argument("--slippage-bp", type=float, default=0.5, help="slippage per change, basis points (default 0.5)")
    p.add_argument("--margin", type=float, default=SignalPolicy().margin, help="signal margin around 0.5")
    p.add_argument("--long-short", action="store_true", help="sell signals go short (default: flat)")
    p.add_argument("--folds", type=int, default=None, help="walk-forward folds (default: as for training)")
    p.add_argument("--seed", type=int, default=None, help="seed for refitting (default: the version's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", type=Path, default=None, help="output directory (default reports/backtest-DATA/)")
    return p


@dataclass(frozen=True)
class Recipe:
    """How the ML strategy's model is refitted on each fold (what :func:`spark_ml.core.ml.training.gate` does too)."""

    kind: str
    params: dict[str, Any]
    seed: int
    folds: int | None
    gap: int | None
    label: str
    """Human-readable description for the report."""


def resolve_recipe(data: str, version: str | None, registry: Path | None, seed: int | None) -> Recipe:
    """The registry version's recipe; the default LightGBM one when nothing trained is active."""
    from spark_ml.core.io.registry import Registry

    root = registry if registry is not None else _default_registry()
    reg = Registry(root)
    chosen = version if version is not None else reg.active_version()
    if chosen == BASELINE_VERSION and version is None:
        return Recipe(
            "lgbm", {}, seed or 0, None, None, f"lgbm, default parameters (the active version is baseline in {root})"
        )
    manifest = reg.manifest(chosen)
    extra = manifest.extra
    same_data = manifest.data == data
    return Recipe(
        manifest.kind,
        dict(extra.get("params") or {}),
        int(extra.get("seed", 0)) if seed is None else seed,
        int(extra["folds"]) if same_data and "folds" in extra else None,
        int(extra["gap"]) if same_data and "gap" in extra else None,
        f"{manifest.kind} {chosen} (trained on {manifest.data}), refitted on each fold's training rows",
    )


def _default_registry() -> Path:
    from spark_ml.worker.settings import Settings

    return Path(Settings().registry)


def out_of_sample(ds: Dataset, recipe: Recipe, folds: int | None) -> WalkForward:
    """Walk-forward scores of the recipe and of the baseline, with a progress bar on stderr."""
    from tqdm import tqdm

    n = ds.rows().size
    k = folds or recipe.folds or choose_folds(n, gap=recipe.gap)
    with tqdm(total=k, desc=f"walk-forward {recipe.kind}", unit="fold", file=sys.stderr, disable=None) as bar:

        def step(_label: str) -> None:
            bar.update(1)

        return walk_forward_eval(
            ds,
            recipe.kind,
            seed=recipe.seed,
            folds=k,
            gap=recipe.gap,
            params=recipe.params,
            progress=step,
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, refit walk-forward, backtest; returns the report (the files are written by :func:`write_outputs`)."""
    ds = load(args.data, seed=args.seed or 0)
    recipe = resolve_recipe(ds.name, args.version, args.registry, args.seed)
    wf = out_of_sample(ds, recipe, args.folds)
    bars, _, ml, base = wf.oos()
    if not (np.diff(bars) == 1).all():
        raise ValueError("walk-forward test blocks are not contiguous")
    # bars[j]'s signal is traded from its close to the next one: prices run one bar past the last test row
    prices = ds.close[bars[0] : bars[-1] + 2]
    ts = ds.ts[bars[0] : bars[-1] + 2]
    periods = an.periods_per_year(ts)
    common: dict[str, Any] = {
        "periods_per_year": periods,
        "policy": SignalPolicy(margin=args.margin),
        "long_short": args.long_short,
        "cost_bp": args.cost_bp,
        "slippage_bp": args.slippage_bp,
    }
    results = {
        "ml": bt.backtest_scores(prices, np.append(ml, 0.5), name="ml", **common),
        "baseline": bt.backtest_scores(prices, np.append(base, 0.5), name="baseline", **common),
        "buy_and_hold": bt.buy_and_hold(
            prices, periods_per_year=periods, cost_bp=args.cost_bp, slippage_bp=args.slippage_bp
        ),
    }
    return {
        "data": ds.name,
        "symbol": ds.symbol,
        "period": {"start": _iso(int(ts[0])), "end": _iso(int(ts[-1])), "bars": int(ts.size)},
        "periods_per_year": periods,
        "costs": {"cost_bp": args.cost_bp, "slippage_bp": args.slippage_bp},
        "signals": {"margin": args.margin, "long_short": args.long_short},
        "models": {"ml": recipe.label, "baseline": "baseline (fixed weights, nothing fitted)"},
        "folds": [f.fold.as_dict() for f in wf.folds],
        "auc": _finite({"ml": wf.metrics.get("auc", math.nan), "baseline": wf.baseline_metrics.get("auc", math.nan)}),
        "strategies": {name: _finite(res.summary()) for name, res in results.items()},
        "_results": results,
        "_ts": ts,
    }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat().replace("+00:00", "Z")


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """Undefined or unbounded figures (nan, inf) become null: JSON has no such numbers."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "int":
        return str(int(value))
    return f"{value:.2f}"


def table(report: dict[str, Any]) -> str:
    """The strategies side by side as a Markdown table."""
    head = "| strategy | " + " | ".join(title for _, title, _ in _COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(_COLUMNS)
    lines = [head, rule]
    for name, s in report["strategies"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(s[k], kind) for k, _, kind in _COLUMNS) + " |")
    return "\n".join(lines)


def describe(report: dict[str, Any]) -> str:
    period, costs, sig = report["period"], report["costs"], report["signals"]
    return "\n".join(
        [
            f"Backtest on {report['data']} ({report['symbol']}), walk-forward out-of-sample "
            f"{period['start']} .. {period['end']} ({period['bars']} bars, {report['periods_per_year']:.0f} a year)",
            f"costs {costs['cost_bp']} bp + slippage {costs['slippage_bp']} bp per unit of position moved; "
            f"signal margin {sig['margin']}; {'long/short' if sig['long_short'] else 'long/flat'}",
            f"ml: {report['models']['ml']}",
        ]
    )


def plot(report: dict[str, Any], path: Path) -> None:
    """Equity curves and drawdowns of the three strategies (Agg, no display needed)."""
    from matplotlib.figure import Figure

    results: dict[str, bt.StrategyResult] = report["_results"]
    when = np.asarray(report["_ts"], dtype="datetime64[ms]")
    fig = Figure(figsize=(10, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for name, res in results.items():
        top.plot(when, res.equity, label=name, linewidth=1.0)
        dd = np.concatenate(([0.0], an.drawdown_series(res.returns)))
        bottom.plot(when, -100 * dd, linewidth=0.8)
    top.set_ylabel("equity (start = 1)")
    top.set_title(f"{report['symbol']}: out-of-sample equity after costs")
    top.legend(loc="best")
    top.grid(alpha=0.3)
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    fig.savefig(path, dpi=110)


def write_outputs(report: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "backtest.json", "table": out / "backtest.md", "plot": out / "equity.png"}
    plot(report, files["plot"])
    files["table"].write_text(describe(report) + "\n\n" + table(report) + "\n")
    names = {k: str(v) for k, v in files.items()}
    public = {**{k: v for k, v in report.items() if not k.startswith("_")}, "files": names}
    files["json"].write_text(json.dumps(public, indent=2, allow_nan=False) + "\n")
    return names


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem).strip("-").lower() or "data"


def _check(args: argparse.Namespace) -> str | None:
    if not (math.isfinite(args.cost_bp) and args.cost_bp >= 0):
        return "--cost-bp must be >= 0"
    if not (math.isfinite(args.slippage_bp) and args.slippage_bp >= 0):
        return "--slippage-bp must be >= 0"
    if not 0 <= args.margin < 0.5:
        return "--margin must be in [0, 0.5)"
    if args.folds is not None and args.folds < 1:
        return "--folds must be >= 1"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"spark-ml backtest: {problem}", file=sys.stderr)
        return 2
    try:
        report = run(args)
    except (SparkMlError, ValueError) as exc:
        print(f"spark-ml backtest: {exc}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else DEFAULT_OUT / f"backtest-{_slug(args.data)}"
    files = write_outputs(report, out)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    if args.json:
        print(json.dumps({**public, "files": files}, allow_nan=False))
    else:
        print(describe(report) + "\n\n" + table(report) + "\n")
        print("wrote " + ", ".join(files.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

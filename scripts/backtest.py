"""``spark-ml backtest``: the ML model, the baseline and buy-and-hold on the walk-forward out-of-sample period.

Usage::

    spark-ml backtest --data {eurusd,goog,btcusd,synthetic,PATH} [--version V] [--registry PATH]
                      [--cost-bp X] [--slippage-bp Y] [--margin M] [--long-short] [--json] [--out DIR]
                      [--export {csv,json,parquet}]

The period and the timing are those of :mod:`spark_ml.core.trading.report`: the registry version's recipe
(model family, parameters, seed, folds) is refitted on each fold's training rows, as ``spark-ml eval``
does, because the stored artifact itself may have been trained on the very bars being tested. When the
active version is the baseline, a LightGBM model with default parameters is refitted the same way. The
baseline needs no fitting.

Writes ``backtest.json``, ``backtest.md`` (the table), ``equity.png`` and ``tearsheet.html`` (one self-contained
HTML report) into ``--out``; with ``--export`` also the ML strategy's equity curve and trade list under
``--out``/exports/, laid out as ``spark-ml analytics export`` writes them.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from spark_ml.core.engine import SignalPolicy
from spark_ml.core.errors import SparkMlError
from spark_ml.core.io.exports import FORMATS, MissingDependency, require_pyarrow
from spark_ml.core.io.registry import Registry
from spark_ml.core.io.reports import write_backtest_report
from spark_ml.core.ml.evaluate import choose_folds
from spark_ml.core.ml.sources import load
from spark_ml.core.ml.training import Recipe, walk_forward_eval
from spark_ml.core.models import BASELINE_VERSION
from spark_ml.core.trading.report import Comparison, compare, describe, table
from spark_ml.scripts._args import Bar, add_registry, registry_path

__all__ = ["main"]

DEFAULT_OUT = Path("reports")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spark-ml backtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="eurusd", help="eurusd | goog | btcusd | synthetic | PATH to an OHLCV CSV")
    p.add_argument("--version", default=None, help="registry version of the ML model (default: the active one)")
    add_registry(p)
    p.add_argument("--cost-bp", type=float, default=1.0, help="cost per position change, basis points (default 1)")
    p.add_argument("--slippage-bp", type=float, default=0.5, help="slippage per change, basis points (default 0.5)")
    p.add_argument("--margin", type=float, default=SignalPolicy().margin, help="signal margin around 0.5")
    p.add_argument("--long-short", action="store_true", help="sell signals go short (default: flat)")
    p.add_argument("--folds", type=int, default=None, help="walk-forward folds (default: as for training)")
    p.add_argument("--seed", type=int, default=None, help="seed for refitting (default: the version's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", type=Path, default=None, help="output directory (default reports/backtest-DATA/)")
    p.add_argument(
        "--export", choices=FORMATS, default=None, help="also write the ML strategy's equity and trades in OUT/exports/"
    )
    return p


def resolve_recipe(data: str, args: argparse.Namespace) -> tuple[Recipe, str]:
    """The registry version's recipe and a label for the report; the default LightGBM one when the baseline is
    active and no version was asked for."""
    root = registry_path(args.registry)
    reg = Registry(root)
    chosen = args.version if args.version is not None else reg.active_version()
    if chosen == BASELINE_VERSION and args.version is None:
        return Recipe("lgbm", args.seed or 0), f"lgbm, default parameters (the active version is baseline in {root})"
    manifest = reg.manifest(chosen)
    label = f"{manifest.kind} {chosen} (trained on {manifest.data}), refitted on each fold's training rows"
    return Recipe.of_version(manifest, data, seed=args.seed), label


def run(args: argparse.Namespace) -> Comparison:
    """Load, refit walk-forward (a progress bar on stderr), backtest the three strategies."""
    ds = load(args.data, seed=args.seed or 0)
    recipe, label = resolve_recipe(ds.name, args)
    folds = args.folds or recipe.folds or choose_folds(ds.rows().size, gap=recipe.gap)
    bar = Bar(folds, desc=f"walk-forward {recipe.kind}", unit="fold")
    try:
        wf = walk_forward_eval(ds, Recipe(recipe.kind, recipe.seed, folds, recipe.gap, recipe.params), progress=bar)
    finally:
        bar.close()
    return compare(
        ds,
        wf,
        label=label,
        cost_bp=args.cost_bp,
        slippage_bp=args.slippage_bp,
        margin=args.margin,
        long_short=args.long_short,
    )


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
    if args.export == "parquet":
        try:
            require_pyarrow()
        except MissingDependency as exc:
            return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _check(args)
    if problem:
        print(f"spark-ml backtest: {problem}", file=sys.stderr)
        return 2
    try:
        comparison = run(args)
    except (SparkMlError, ValueError) as exc:
        print(f"spark-ml backtest: {exc}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else DEFAULT_OUT / f"backtest-{_slug(args.data)}"
    try:
        files = write_backtest_report(out, comparison, export=args.export)
    except OSError as exc:
        print(f"spark-ml backtest: cannot write to {out}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**comparison.doc, "files": files}, allow_nan=False))
    else:
        print(describe(comparison.doc) + "\n\n" + table(comparison.doc) + "\n")
        print("wrote " + ", ".join(files.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

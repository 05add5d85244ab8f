"""``spark-ml train``: fit a model with walk-forward evaluation, register it, write the report and plots.

Usage::

    spark-ml train --data {synthetic,eurusd,goog,btcusd,PATH} --model {logistic,lgbm,xgb} [--seed N]
                   [--folds K] [--gap G] [--registry PATH] [--out DIR] [--json]

Writes ``report.json``, ``roc.png``, ``calibration.png`` and ``importance.png`` to ``--out``
(default ``reports/<version>/``). Exit codes: 0 trained and registered, 2 bad input (unknown data,
unreadable CSV, too few rows).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spark_ml.core.io.registry import Registry
from spark_ml.core.io.reports import write_train_report
from spark_ml.core.ml.evaluate import choose_folds
from spark_ml.core.ml.sources import BUILTIN, load
from spark_ml.core.ml.training import Recipe, train
from spark_ml.core.models import MODEL_KINDS
from spark_ml.scripts._args import REFUSED, Bar, add_registry, data_name, refuse, registry_path

__all__ = ["build_parser", "main"]

_PROG = "spark-ml train"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Train a model with walk-forward evaluation and register it.")
    p.add_argument("--data", required=True, help=f"synthetic, {', '.join(BUILTIN)}, or the path of an OHLCV CSV")
    p.add_argument("--model", required=True, choices=MODEL_KINDS, help="model kind")
    p.add_argument("--seed", type=int, default=0, help="seed of the model (and of the synthetic bed)")
    p.add_argument("--folds", type=int, default=None, help="walk-forward folds (default: up to 5)")
    p.add_argument("--gap", type=int, default=None, help="rows left out before each test block (default: 35)")
    add_registry(
        p, out="report directory (default: reports/<version>/)", json_help="print one JSON object instead of a summary"
    )
    return p


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _summary(doc: dict[str, Any], out: Path) -> str:
    lines = [
        f"{doc['version']}: {doc['kind']} on {doc['data']} ({doc['n_rows']} rows, {len(doc['folds'])} walk-forward "
        f"folds, gap {doc['folds'][0]['gap']}) in {doc['train_seconds']:.1f} s",
        f"{'metric':<16}{'model: mean ± std over folds':>30}{'baseline':>12}",
    ]
    for metric in doc["metrics"]:
        s = doc["spread"][metric]
        model = f"{_fmt(s['mean'])} ± {_fmt(s['std'])}"
        lines.append(f"{metric:<16}{model:>30}{_fmt(doc['baseline_metrics'][metric]):>12}")
    if "bayes_auc" in doc:
        lines.append(f"Bayes-optimal AUC of the synthetic bed on the same rows: {doc['bayes_auc']:.4f}")
    lines.append(f"report: {out}/")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        registry = Registry(registry_path(args.registry))
        t0 = time.perf_counter()
        ds = load(data_name(args.data), seed=args.seed)
        data_seconds = time.perf_counter() - t0
        folds = args.folds or choose_folds(ds.rows().size, gap=args.gap)
        progress = Bar(folds + 2, desc="train", enabled=not args.json)
        try:
            report = train(ds, Recipe(args.model, args.seed, folds, args.gap), progress=progress)
        finally:
            progress.close()
        manifest = report.register(registry)
    except REFUSED as exc:
        return refuse(_PROG, exc)
    doc = report.to_json(manifest.version)
    doc["data_seconds"] = data_seconds
    out = args.out or Path("reports") / manifest.version
    _, y, scores, baseline = report.evaluation.oos()
    write_train_report(out, doc, y, scores, baseline, report.importance)
    doc["report_dir"] = str(out)
    print(json.dumps(doc, allow_nan=False) if args.json else _summary(doc, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

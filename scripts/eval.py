"""``spark-ml eval``: gate a registered version against the SLOs (``core/slo.toml``) and the baseline.

Usage::

    spark-ml eval [--version V] [--data {synthetic,eurusd,goog,btcusd,PATH}] [--seed N] [--slo FILE]
                  [--registry PATH] [--out DIR] [--json]

The version (default: the active one) is re-evaluated walk-forward on the data (default: its training
data): its recipe is refitted on each fold's past and scored on the fold, and the baseline is scored on the
same rows. Writes ``eval_report.json`` and ``eval_result.txt`` (PASS or FAIL on the first line) to
``--out`` (default ``reports/<version>/``), with ``importance.png``: gain (mean over the fold models) and
permutation importance (AUC drop on the out-of-sample folds), also under ``importance`` in the JSON.
Exit codes: 0 pass, 1 fail, 2 bad input (unknown version or data, corrupt artifact, bad SLO file).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spark_ml.core.errors import SparkMlError
from spark_ml.core.io.registry import Manifest, Registry
from spark_ml.core.io.reports import eval_text, write_eval_report
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.evaluate import load_slo
from spark_ml.core.ml.sources import BUILTIN, load
from spark_ml.core.ml.training import gate, jsonable, permutation_importance, walk_forward_eval
from spark_ml.scripts.train import data_name, registry_path

__all__ = ["build_parser", "main"]

_PROG = "spark-ml eval"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Gate a model version against the SLOs and the baseline.")
    p.add_argument("--version", default=None, help="registry version (default: the active one)")
    p.add_argument("--data", default=None, help=f"synthetic, {', '.join(BUILTIN)} or a CSV (default: training data)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the one the version was trained with)")
    p.add_argument("--slo", type=Path, default=None, help="SLO thresholds (default: the packaged core/slo.toml)")
    p.add_argument("--registry", type=Path, default=None, help="registry directory (default: SPARK_ML_REGISTRY)")
    p.add_argument("--out", type=Path, default=None, help="report directory (default: reports/<version>/)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return p


def _run(args: argparse.Namespace) -> dict[str, Any]:
    registry = Registry(registry_path(args.registry))
    version = args.version or registry.active_version()
    manifest = registry.manifest(version)
    registry.load(version)  # refuse a corrupt artifact before spending time on it
    data = args.data or (manifest.data if manifest.kind != "baseline" else None)
    if data is None:
        raise ValueError("the baseline has no training data: give --data")
    seed = args.seed if args.seed is not None else int(manifest.extra.get("seed", 0))
    ds = load(data_name(data), seed=seed)
    doc = gate(ds, manifest, load_slo(args.slo), seed=seed)
    doc["importance"] = fold_importance(ds, manifest, doc, seed)
    return doc


def fold_importance(ds: Dataset, manifest: Manifest, doc: dict[str, Any], seed: int) -> dict[str, dict[str, float]]:
    """Gain (mean over the fold models) and permutation importance, both on the gate's walk-forward folds.

    The folds are refitted with the gate's recipe (same seed, folds, gap and parameters, so the same
    models): :func:`spark_ml.core.ml.training.gate` does not hand its fold models back.
    """
    params = manifest.extra.get("params")
    wf = walk_forward_eval(ds, manifest.kind, seed=seed, folds=doc["folds"], gap=doc["gap"], params=params)
    out: dict[str, dict[str, float]] = {}
    gains = [f.model.importance() for f in wf.folds if hasattr(f.model, "importance")]
    if gains:
        out["gain"] = {name: float(np.mean([g[name] for g in gains])) for name in gains[0]}
    out["permutation"] = permutation_importance(ds, wf, seed=seed)
    result: dict[str, dict[str, float]] = jsonable(out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        doc = _run(args)
    except (SparkMlError, ValueError, OSError) as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("reports") / doc["version"]
    write_eval_report(out, doc)
    doc["report_dir"] = str(out)
    print(json.dumps(doc, allow_nan=False) if args.json else eval_text(doc, doc["checks"]) + f"report: {out}/")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

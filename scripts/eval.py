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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spark_ml.core.io.registry import Registry
from spark_ml.core.io.reports import eval_text, write_eval_report
from spark_ml.core.ml.evaluate import load_slo
from spark_ml.core.ml.sources import BUILTIN, load
from spark_ml.core.ml.training import gate
from spark_ml.scripts._args import REFUSED, add_registry, data_name, refuse, registry_path

__all__ = ["build_parser", "main"]

_PROG = "spark-ml eval"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Gate a model version against the SLOs and the baseline.")
    p.add_argument("--version", default=None, help="registry version (default: the active one)")
    p.add_argument("--data", default=None, help=f"synthetic, {', '.join(BUILTIN)} or a CSV (default: training data)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the one the version was trained with)")
    p.add_argument("--slo", type=Path, default=None, help="SLO thresholds (default: the packaged core/slo.toml)")
    add_registry(
        p, out="report directory (default: reports/<version>/)", json_help="print the report as one JSON object"
    )
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
    return gate(ds, manifest, load_slo(args.slo), seed=seed, importance=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        doc = _run(args)
    except REFUSED as exc:
        return refuse(_PROG, exc)
    out = args.out or Path("reports") / doc["version"]
    write_eval_report(out, doc)
    doc["report_dir"] = str(out)
    print(json.dumps(doc, allow_nan=False) if args.json else eval_text(doc, doc["checks"]) + f"report: {out}/")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

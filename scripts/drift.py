"""``spark-ml drift calibrate``: measure feature PSI on normal periods and on a replayed regime change.

Usage::

    spark-ml drift calibrate [--data NAME ...] [--window W] [--sweep W1,W2,...] [--vol-factor 3]
                             [--trend-bp 5] [--horizon 600] [--hold 120] [--hold-warning 600]
                             [--thresholds FILE] [--out DIR] [--json]

For each data set (default ``eurusd`` and ``synthetic``; any name ``spark-ml train`` accepts), the PSI
of every window on normal periods and the delay until a replayed regime change (``--vol-factor``,
``--trend-bp``, within ``--horizon``) is seen; what is measured and how the levels are proposed is told in
:mod:`spark_ml.core.ml.calibration`. ``--sweep`` repeats the measurement for other window sizes with
levels measured at each size (the window trade-off).
Writes ``drift_calibration.json`` and ``drift_<data>.png`` (PSI over time per feature, normal period and a
regime change, with the configured levels) into ``--out`` (default ``reports/drift/``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from spark_ml.core.io.reports import write_drift_report
from spark_ml.core.ml.calibration import Stress, calibrate, summary_text
from spark_ml.core.ml.drift import load_thresholds
from spark_ml.core.ml.sources import load
from spark_ml.scripts._args import REFUSED, refuse

__all__ = ["build_parser", "main"]

_PROG = "spark-ml drift"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Feature drift (PSI) calibration.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="measure PSI on normal periods and a replayed regime change")
    c.add_argument("--data", nargs="+", default=["eurusd", "synthetic"], help="data sets (default: eurusd synthetic)")
    c.add_argument("--window", type=int, default=None, help="window in snapshots (default: core/drift.toml)")
    c.add_argument("--sweep", default=None, help="comma-separated windows to compare (levels measured at each)")
    c.add_argument("--vol-factor", type=float, default=3.0, help="regime change: multiplier of the log returns")
    c.add_argument("--trend-bp", type=float, default=5.0, help="regime change: basis points added to each return")
    c.add_argument("--horizon", type=int, default=600, help="snapshots after a change to look for a crossing")
    c.add_argument(
        "--hold", type=int, default=120, help="snapshots the critical alert must hold (for: 2m at 1 snapshot/s)"
    )
    c.add_argument(
        "--hold-warning", type=int, default=600, help="snapshots the warning alert must hold (for: 10m at 1/s)"
    )
    c.add_argument("--thresholds", type=Path, default=None, help="levels file (default: the packaged core/drift.toml)")
    c.add_argument("--out", type=Path, default=Path("reports/drift"), help="output directory")
    c.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        levels = load_thresholds(args.thresholds)
        doc, measured = calibrate(
            [load(name) for name in args.data],
            levels,
            Stress(horizon=args.horizon, vol_factor=args.vol_factor, trend_bp=args.trend_bp),
            window=args.window,
            holds={"warning": args.hold_warning, "critical": args.hold},
            sweep=[int(w) for w in args.sweep.split(",")] if args.sweep else (),
        )
        path = write_drift_report(args.out, doc, measured, levels)
    except REFUSED as exc:
        return refuse(_PROG, exc)
    doc["report"] = str(path)
    print(json.dumps(doc, allow_nan=False) if args.json else summary_text(doc) + f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

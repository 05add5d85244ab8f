"""``spark-ml drift calibrate``: measure feature PSI on normal periods and on a replayed regime change.

Usage::

    spark-ml drift calibrate [--data NAME ...] [--window W] [--sweep W1,W2,...] [--vol-factor 3]
                             [--trend-bp 5] [--horizon 600] [--hold 120] [--hold-warning 600]
                             [--thresholds FILE] [--out DIR] [--json]

For each data set (default ``eurusd`` and ``synthetic``; any name ``spark-ml train`` accepts):

- **normal periods**: the labelled rows are split at 40, 50, 60 and 70%; the reference distribution is
  built from the rows before the split exactly as ``spark-ml train`` builds a manifest's, and the PSI of
  every sliding window of ``W`` rows after the split is computed (the numbers the worker's gauge would
  show if the rows arrived one snapshot at a time). Quantiles p50/p95/p99/max per feature, and the share
  of windows at or above the configured warning and critical levels (the false-alarm rate).
- **regime change**: reference from the first half; at change points every 150 bars in the second half
  the closes from that bar on get their log returns multiplied by ``--vol-factor`` plus ``--trend-bp`` per
  bar, features are recomputed by the serving code, and the delay is the number of changed snapshots in
  the window when a feature's PSI first reaches its critical level (none within ``--horizon``: not seen).

The proposed levels are, per feature, the largest p95 (warning) and p99 (critical) over the data sets,
never below the usual PSI rule of thumb 0.1 / 0.25, rounded up to two significant digits. ``--sweep``
repeats the measurement for other window sizes with levels measured at each size (the window trade-off).
Writes ``drift_calibration.json`` and ``drift_<data>.png`` (PSI over time per feature, normal period and a
regime change, with the configured levels) into ``--out`` (default ``reports/drift/``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

from spark_ml.core.codec import Snapshot
from spark_ml.core.errors import SparkMlError
from spark_ml.core.features import FEATURE_NAMES, WARMUP, series_features
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.drift import DriftThresholds, first_crossing, load_thresholds, stressed_closes, window_psi
from spark_ml.core.ml.sources import load
from spark_ml.core.ml.training import jsonable, reference_distribution

__all__ = ["build_parser", "main"]

_PROG = "spark-ml drift"
SPLITS = (0.4, 0.5, 0.6, 0.7)
"""Where the normal-period references end, as shares of the labelled rows."""
FLOOR = {"warning": 0.1, "critical": 0.25}
"""The usual PSI rule of thumb: proposed levels never go below it."""
CHANGE_STEP = 150
MAX_CHANGES = 20


@dataclass(slots=True)
class Measured:
    """What one data set showed at one window size."""

    name: str
    window: int
    normal: dict[str, NDArray[np.float64]]
    """feature -> PSI of every normal-period window (all splits pooled)."""
    delays: dict[str, list[int | None]]
    """feature -> per change point, changed snapshots in the window when PSI first reached critical."""
    trace: dict[str, NDArray[np.float64]]
    """feature -> PSI over time after the middle split, normal series (for the figure)."""
    stressed: dict[str, NDArray[np.float64]]
    """feature -> PSI over time of the first regime change, from the change on."""
    trace_start: int
    """Bar index at which the first window of ``trace`` ends."""
    change_at: int | None


def _quantiles(v: NDArray[np.float64]) -> dict[str, float]:
    if v.size == 0:
        return {}
    p50, p95, p99 = np.quantile(v, [0.5, 0.95, 0.99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(v.max())}


def _round_up(x: float) -> float:
    if x <= 0:
        return x
    scale = 10 ** (math.floor(math.log10(x)) - 1)
    return float(round(math.ceil(x / scale - 1e-9) * scale, 10))


def _normal(
    x: NDArray[np.float64], window: int
) -> tuple[dict[str, NDArray[np.float64]], dict[str, NDArray[np.float64]]]:
    pooled: dict[str, list[NDArray[np.float64]]] = {f: [] for f in FEATURE_NAMES}
    trace: dict[str, NDArray[np.float64]] = {}
    for s in SPLITS:
        k = int(len(x) * s)
        series = window_psi(reference_distribution(x[:k], FEATURE_NAMES), x[k:], FEATURE_NAMES, window)
        for f in FEATURE_NAMES:
            pooled[f].append(series[f])
        if s == 0.5:
            trace = series
    return {f: np.concatenate(v) for f, v in pooled.items()}, trace


def _with_closes(snaps: Sequence[Snapshot], closes: NDArray[np.float64]) -> list[Snapshot]:
    return [
        Snapshot(s.ts, float(c), s.symbol, spread_bp=s.spread_bp, vol1m=s.vol1m, rsi14=s.rsi14)
        for s, c in zip(snaps, closes, strict=True)
    ]


def replay_change(
    ds: Dataset, ref: Mapping[str, Any], change: int, window: int, horizon: int, vol_factor: float, trend_bp: float
) -> dict[str, NDArray[np.float64]]:
    """PSI per feature of the windows ending at bars ``change .. change + horizon - 1`` of a stressed replay.

    Element ``k`` is the window holding ``k + 1`` changed snapshots.
    """
    start = change - window - WARMUP + 1
    end = min(change + horizon, len(ds.snapshots))
    closes = stressed_closes(ds.close[start:end], change - start, vol_factor=vol_factor, trend_bp=trend_bp)
    x = series_features(_with_closes(ds.snapshots[start:end], closes))[WARMUP:]
    return window_psi(ref, x, FEATURE_NAMES, window)


def measure(
    ds: Dataset, window: int, levels: DriftThresholds, *, horizon: int, vol_factor: float, trend_bp: float
) -> Measured:
    """Normal-period PSI and regime-change delays of one data set at one window size."""
    x, _ = ds.xy()
    normal, trace = _normal(x, window)
    half = WARMUP + len(x) // 2
    ref = reference_distribution(x[: len(x) // 2], FEATURE_NAMES)
    changes = list(range(half + window, len(ds.snapshots) - horizon, CHANGE_STEP))[:MAX_CHANGES] if horizon > 0 else []
    delays: dict[str, list[int | None]] = {f: [] for f in FEATURE_NAMES}
    stressed: dict[str, NDArray[np.float64]] = {}
    for c in changes:
        series = replay_change(ds, ref, c, window, horizon, vol_factor, trend_bp)
        stressed = stressed or series
        for f in FEATURE_NAMES:
            hit = first_crossing(series[f], levels.levels(f)["critical"])
            delays[f].append(None if hit is None else hit + 1)
    trace_start = WARMUP + int(len(x) * 0.5) + window - 1
    return Measured(ds.name, window, normal, delays, trace, stressed, trace_start, changes[0] if changes else None)


def _delay_summary(delays: Sequence[int | None]) -> dict[str, Any]:
    seen = [d for d in delays if d is not None]
    return {
        "changes": len(delays),
        "detected": len(seen),
        "median": float(np.median(seen)) if seen else None,
        "max": max(seen) if seen else None,
    }


def summarize(m: Measured, levels: DriftThresholds, holds: Mapping[str, int]) -> dict[str, Any]:
    """The JSON section of one data set: quantiles, false-alarm shares and delays per feature."""
    features: dict[str, Any] = {}
    for f in FEATURE_NAMES:
        v, lv = m.normal[f], levels.levels(f)
        features[f] = {
            "normal": _quantiles(v),
            "false_alarm": {k: float(np.mean(v >= t)) if v.size else None for k, t in lv.items()},
            "regime_change_delay": _delay_summary(m.delays[f]),
        }
    alarms: dict[str, Any] = {}
    for severity, hold in holds.items():
        above = np.any(np.stack([m.normal[f] >= levels.levels(f)[severity] for f in FEATURE_NAMES]), axis=0)
        alarms[severity] = {
            "any_feature": float(above.mean()) if above.size else None,
            "held": hold,
            "any_feature_held": float(_held(above, hold).mean()) if above.size else None,
        }
    return {
        "windows": int(m.normal[FEATURE_NAMES[0]].size),
        "change_points": len(m.delays[FEATURE_NAMES[0]]),
        "alarms": alarms,
        "features": features,
    }


def _held(above: NDArray[np.bool_] | np.bool_, hold: int) -> NDArray[np.bool_]:
    """Windows ending a run of at least ``hold`` consecutive windows above the level: what ``for:`` lets fire.

    Runs are counted within the pooled series, so a run may span two splits; it only overstates the rate.
    """
    flags = np.atleast_1d(above).tolist()
    run = np.zeros(len(flags), dtype=np.int64)
    count = 0
    for i, a in enumerate(flags):
        count = count + 1 if a else 0
        run[i] = count
    out: NDArray[np.bool_] = run >= hold
    return out


def propose(measured: Sequence[Measured]) -> dict[str, dict[str, float]]:
    """Per feature: the largest p95 / p99 over the data sets, floored at 0.1 / 0.25, rounded up."""
    out: dict[str, dict[str, float]] = {}
    for f in FEATURE_NAMES:
        qs = [_quantiles(m.normal[f]) for m in measured if m.normal[f].size]
        p95 = max((q["p95"] for q in qs), default=0.0)
        p99 = max((q["p99"] for q in qs), default=0.0)
        out[f] = {
            "warning": _round_up(max(FLOOR["warning"], p95)),
            "critical": _round_up(max(FLOOR["critical"], p99)),
        }
    return out


def figure(m: Measured, levels: DriftThresholds) -> Figure:
    """PSI over time per feature: a normal period (blue), a regime change (red), the configured levels."""
    fig = Figure(figsize=(15, 11), layout="constrained")
    axes = fig.subplots(4, 3).ravel()
    for ax, f in zip(axes, FEATURE_NAMES, strict=False):
        trace = m.trace[f]
        ax.plot(m.trace_start + np.arange(trace.size), np.maximum(trace, 1e-3), color="tab:blue", lw=0.8)
        if m.change_at is not None and m.stressed:
            s = m.stressed[f]
            ax.plot(m.change_at + np.arange(s.size), np.maximum(s, 1e-3), color="tab:red", lw=0.8)
            ax.axvline(m.change_at, color="tab:red", lw=0.6, ls=":")
        lv = levels.levels(f)
        ax.axhline(lv["warning"], color="tab:orange", ls="--", lw=0.8)
        ax.axhline(lv["critical"], color="tab:red", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f, fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].axis("off")
    axes[-1].text(
        0.0,
        0.5,
        f"{m.name}: PSI of a {m.window}-snapshot window vs the reference\n"
        "blue: normal period after the 50% split\nred: replayed regime change (dotted: change)\n"
        "dashed: warning / critical levels (core/drift.toml)",
        fontsize=10,
        va="center",
    )
    fig.suptitle(f"Feature drift on {m.name} (x: bar index where the window ends)")
    return fig


def _sweep(datasets: Sequence[Dataset], windows: Sequence[int], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """At each window size, levels measured at that size and the regime-change delays they give."""
    out: dict[str, dict[str, Any]] = {}
    for w in windows:
        usable = [ds for ds in datasets if len(ds.xy()[0]) * (1 - SPLITS[0]) >= w]
        first = [measure(ds, w, DriftThresholds(window=w), horizon=0, vol_factor=1, trend_bp=0) for ds in usable]
        proposed = propose(first)
        levels = DriftThresholds(
            window=w,
            warning={f: v["warning"] for f, v in proposed.items()},
            critical={f: v["critical"] for f, v in proposed.items()},
        )
        kw = {"horizon": args.horizon, "vol_factor": args.vol_factor, "trend_bp": args.trend_bp}
        row: dict[str, Any] = {"levels": proposed}
        for ds in usable:
            m = measure(ds, w, levels, **kw)
            row[ds.name] = {f: _delay_summary(m.delays[f]) for f in ("vol_20", "bb_width", "ret_1")}
        out[str(w)] = row
    return out


def calibrate(args: argparse.Namespace) -> dict[str, Any]:
    """The whole measurement; writes the figures into ``args.out`` and returns the JSON document."""
    levels = load_thresholds(args.thresholds)
    window = args.window or levels.window
    datasets = [load(name) for name in args.data]
    kw = {"horizon": args.horizon, "vol_factor": args.vol_factor, "trend_bp": args.trend_bp}
    measured = [measure(ds, window, levels, **kw) for ds in datasets]
    holds = {"warning": args.hold_warning, "critical": args.hold}
    args.out.mkdir(parents=True, exist_ok=True)
    for m in measured:
        figure(m, levels).savefig(args.out / f"drift_{m.name}.png", dpi=90)
    doc: dict[str, Any] = {
        "window": window,
        "splits": list(SPLITS),
        "regime_change": {"vol_factor": args.vol_factor, "trend_bp": args.trend_bp, "horizon": args.horizon},
        "configured": {f: levels.levels(f) for f in FEATURE_NAMES},
        "proposed": propose(measured),
        "data": {m.name: summarize(m, levels, holds) for m in measured},
    }
    if args.sweep:
        doc["sweep"] = _sweep(datasets, [int(w) for w in args.sweep.split(",")], args)
    return dict(jsonable(doc))


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _int(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def text(doc: Mapping[str, Any]) -> str:
    """The human summary: one table per data set, then the proposed levels."""
    lines = [f"window {doc['window']} snapshots; regime change {doc['regime_change']}"]
    for name, d in doc["data"].items():
        lines.append(
            f"\n{name}: {d['windows']} normal windows, {d['change_points']} change points; "
            + "; ".join(
                f"any feature >= {k}: {_fmt(a['any_feature'])} of windows"
                f" ({_fmt(a['any_feature_held'])} held {a['held']})"
                for k, a in d["alarms"].items()
            )
        )
        head = f"{'feature':<12}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'FA crit':>9}{'delay med/max (seen)':>22}"
        lines.append(head)
        for f, v in d["features"].items():
            q, dl = v["normal"], v["regime_change_delay"]
            delay = f"{_int(dl['median'])}/{_int(dl['max'])} ({dl['detected']}/{dl['changes']})"
            lines.append(
                f"{f:<12}{_fmt(q.get('p50')):>8}{_fmt(q.get('p95')):>8}{_fmt(q.get('p99')):>8}{_fmt(q.get('max')):>8}"
                f"{_fmt(v['false_alarm']['critical']):>9}{delay:>22}"
            )
    lines.append("\nproposed levels (warning / critical) vs configured:")
    for f, p in doc["proposed"].items():
        c = doc["configured"][f]
        lines.append(f"  {f:<12}{p['warning']:>7} / {p['critical']:<7} configured {c['warning']} / {c['critical']}")
    for w, row in doc.get("sweep", {}).items():
        lines.append(f"sweep window {w}: " + json.dumps({k: v for k, v in row.items() if k != "levels"}))
    return "\n".join(lines)


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
        doc = calibrate(args)
    except (SparkMlError, ValueError, OSError) as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    path = args.out / "drift_calibration.json"
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    doc["report"] = str(path)
    print(json.dumps(doc, allow_nan=False) if args.json else text(doc) + f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

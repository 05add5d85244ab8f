"""Drift calibration: feature PSI on normal periods and on a replayed regime change, and the levels it proposes.

For each data set:

- **normal periods**: the labelled rows are split at 40, 50, 60 and 70%; the reference distribution is
  built from the rows before the split exactly as ``spark-ml train`` builds a manifest's, and the PSI of
  every sliding window of ``W`` rows after the split is computed (the numbers the worker's gauge would
  show if the rows arrived one snapshot at a time). Quantiles p50/p95/p99/max per feature, and the share
  of windows at or above the configured warning and critical levels (the false-alarm rate).
- **regime change**: reference from the first half; at change points every 150 bars in the second half
  the closes from that bar on get their log returns multiplied by a volatility factor plus a trend per
  bar (:class:`Stress`), features are recomputed by the serving code, and the delay is the number of
  changed snapshots in the window when a feature's PSI first reaches its critical level (none within the
  horizon: not seen).

The proposed levels are, per feature, the largest p95 (warning) and p99 (critical) over the data sets,
never below the usual PSI rule of thumb 0.1 / 0.25, rounded up to two significant digits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.codec import Snapshot
from spark_ml.core.features import FEATURE_NAMES, WARMUP, series_features
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.drift import DriftThresholds, first_crossing, stressed_closes, window_psi
from spark_ml.core.ml.training import jsonable, reference_distribution

__all__ = ["Measured", "Stress", "calibrate", "measure", "propose", "replay_change", "summarize", "summary_text"]

SPLITS = (0.4, 0.5, 0.6, 0.7)
"""Where the normal-period references end, as shares of the labelled rows."""
FLOOR = {"warning": 0.1, "critical": 0.25}
"""The usual PSI rule of thumb: proposed levels never go below it."""
CHANGE_STEP = 150
MAX_CHANGES = 20


@dataclass(frozen=True, slots=True)
class Stress:
    """The replayed regime change.

    Args:
        horizon: snapshots after a change to look for a crossing (0: no regime change is replayed).
        vol_factor: multiplier of the log returns from the change on.
        trend_bp: basis points added to each of those returns.
    """

    horizon: int
    vol_factor: float
    trend_bp: float


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
    ds: Dataset, ref: Mapping[str, Any], change: int, window: int, stress: Stress
) -> dict[str, NDArray[np.float64]]:
    """PSI per feature of the windows ending at bars ``change .. change + horizon - 1`` of a stressed replay.

    Element ``k`` is the window holding ``k + 1`` changed snapshots.
    """
    start = change - window - WARMUP + 1
    end = min(change + stress.horizon, len(ds.snapshots))
    closes = stressed_closes(
        ds.close[start:end], change - start, vol_factor=stress.vol_factor, trend_bp=stress.trend_bp
    )
    x = series_features(_with_closes(ds.snapshots[start:end], closes))[WARMUP:]
    return window_psi(ref, x, FEATURE_NAMES, window)


def measure(ds: Dataset, window: int, levels: DriftThresholds, stress: Stress) -> Measured:
    """Normal-period PSI and regime-change delays of one data set at one window size."""
    x, _ = ds.xy()
    normal, trace = _normal(x, window)
    half = WARMUP + len(x) // 2
    ref = reference_distribution(x[: len(x) // 2], FEATURE_NAMES)
    horizon = stress.horizon
    changes = list(range(half + window, len(ds.snapshots) - horizon, CHANGE_STEP))[:MAX_CHANGES] if horizon > 0 else []
    delays: dict[str, list[int | None]] = {f: [] for f in FEATURE_NAMES}
    stressed: dict[str, NDArray[np.float64]] = {}
    for c in changes:
        series = replay_change(ds, ref, c, window, stress)
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


def _sweep(datasets: Sequence[Dataset], windows: Sequence[int], stress: Stress) -> dict[str, dict[str, Any]]:
    """At each window size, levels measured at that size and the regime-change delays they give."""
    out: dict[str, dict[str, Any]] = {}
    for w in windows:
        usable = [ds for ds in datasets if len(ds.xy()[0]) * (1 - SPLITS[0]) >= w]
        first = [
            measure(ds, w, DriftThresholds(window=w), Stress(horizon=0, vol_factor=1, trend_bp=0)) for ds in usable
        ]
        proposed = propose(first)
        levels = DriftThresholds(
            window=w,
            warning={f: v["warning"] for f, v in proposed.items()},
            critical={f: v["critical"] for f, v in proposed.items()},
        )
        row: dict[str, Any] = {"levels": proposed}
        for ds in usable:
            m = measure(ds, w, levels, stress)
            row[ds.name] = {f: _delay_summary(m.delays[f]) for f in ("vol_20", "bb_width", "ret_1")}
        out[str(w)] = row
    return out


def calibrate(
    datasets: Sequence[Dataset],
    levels: DriftThresholds,
    stress: Stress,
    *,
    window: int | None = None,
    holds: Mapping[str, int],
    sweep: Sequence[int] = (),
) -> tuple[dict[str, Any], list[Measured]]:
    """The whole measurement: the JSON document, and what each data set showed (for the figures).

    ``window`` defaults to the levels' own; ``holds`` is severity -> snapshots an alert must hold; ``sweep``
    repeats the measurement at other window sizes with levels measured at each.
    """
    window = window or levels.window
    measured = [measure(ds, window, levels, stress) for ds in datasets]
    doc: dict[str, Any] = {
        "window": window,
        "splits": list(SPLITS),
        "regime_change": {"vol_factor": stress.vol_factor, "trend_bp": stress.trend_bp, "horizon": stress.horizon},
        "configured": {f: levels.levels(f) for f in FEATURE_NAMES},
        "proposed": propose(measured),
        "data": {m.name: summarize(m, levels, holds) for m in measured},
    }
    if sweep:
        doc["sweep"] = _sweep(datasets, sweep, stress)
    return dict(jsonable(doc)), measured


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _int(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def summary_text(doc: Mapping[str, Any]) -> str:
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

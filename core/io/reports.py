"""The report files: JSON, text and PNG figures of ``train``, ``eval``, ``drift calibrate`` and ``backtest``
(whose tear sheet and exports are written by :mod:`spark_ml.core.io.tearsheet` and :mod:`spark_ml.core.io.exports`).

The figures come from :mod:`spark_ml.core.io.plots`; PNGs are saved with matplotlib's Agg renderer, so no
display is needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from spark_ml.core.io.exports import write_export
from spark_ml.core.io.plots import calibration_figure, drift_figure, equity_figure, importance_figure, roc_figure
from spark_ml.core.io.tearsheet import write_tearsheet
from spark_ml.core.ml.calibration import Measured
from spark_ml.core.ml.drift import DriftThresholds
from spark_ml.core.trading.report import Comparison, describe, table
from spark_ml.core.trading.tearsheet import from_comparison

__all__ = [
    "eval_text",
    "write_backtest_report",
    "write_drift_report",
    "write_eval_report",
    "write_json",
    "write_train_report",
]


def write_json(path: Path, doc: Any) -> Path:
    """Pretty JSON (no NaN: callers pass :func:`spark_ml.core.ml.training.jsonable` output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


def _save(fig: Figure, path: Path, dpi: int = 110) -> Path:
    fig.savefig(path, dpi=dpi)
    return path


def write_train_report(
    out: Path,
    doc: Mapping[str, Any],
    y: ArrayLike,
    scores: ArrayLike,
    baseline_scores: ArrayLike,
    importance: Mapping[str, Mapping[str, float]],
) -> list[Path]:
    """``report.json``, ``roc.png``, ``calibration.png`` and ``importance.png`` in ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    curves = {str(doc.get("kind", "model")): scores, "baseline": baseline_scores}
    return [
        write_json(out / "report.json", doc),
        _save(roc_figure(y, curves), out / "roc.png"),
        _save(calibration_figure(y, curves), out / "calibration.png"),
        _save(importance_figure(importance), out / "importance.png"),
    ]


def eval_text(doc: Mapping[str, Any], checks: Sequence[Mapping[str, Any]]) -> str:
    """The PASS/FAIL summary: verdict on the first line, then one line per check with the 95% interval of the
    mean over the folds when the check has one, and a note when that interval crosses the line."""
    lines = [
        "PASS" if doc["passed"] else "FAIL",
        f"version: {doc['version']}  data: {doc['data']}  folds: {doc['folds']}  method: {doc['method']}",
    ]
    for c in checks:
        value = _figure(c["value"])
        interval = f" [{_figure(c['ci95'][0])}, {_figure(c['ci95'][1])}]" if c.get("ci95") else ""
        note = "; its interval crosses the line" if c.get("settled") is False else ""
        lines.append(
            f"{'ok  ' if c['passed'] else 'FAIL'} {c['metric']} = {value}{interval} {c['op']} "
            f"{_figure(c['threshold'])}  ({c['name']}{note})"
        )
    return "\n".join(lines) + "\n"


def _figure(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4f}"


def write_eval_report(out: Path, doc: Mapping[str, Any]) -> list[Path]:
    """``eval_report.json`` and ``eval_result.txt`` (PASS/FAIL first) in ``out``; ``importance.png`` too
    when the report carries ``importance``."""
    out.mkdir(parents=True, exist_ok=True)
    text = out / "eval_result.txt"
    text.write_text(eval_text(doc, doc["checks"]))
    paths = [write_json(out / "eval_report.json", doc), text]
    if doc.get("importance"):
        paths.append(_save(importance_figure(doc["importance"], fold_gain=True), out / "importance.png"))
    return paths


def write_drift_report(
    out: Path, doc: Mapping[str, Any], measured: Sequence[Measured], levels: DriftThresholds
) -> Path:
    """``drift_<data>.png`` per data set and ``drift_calibration.json`` in ``out``; returns the JSON's path."""
    out.mkdir(parents=True, exist_ok=True)
    for m in measured:
        _save(drift_figure(m, levels), out / f"drift_{m.name}.png", dpi=90)
    return write_json(out / "drift_calibration.json", doc)


def write_backtest_report(out: Path, comparison: Comparison, *, export: str | None = None) -> dict[str, str]:
    """``backtest.json``, ``backtest.md`` (the table), ``equity.png`` and ``tearsheet.html`` in ``out``; with
    ``export`` (a format of :data:`spark_ml.core.io.exports.FORMATS`) the ML strategy's equity curve and trade
    list under ``out/exports/`` as :func:`spark_ml.core.io.exports.write_export` writes them. Returns the paths
    by role (``json``, ``table``, ``plot``, ``tearsheet``, ``export``), also recorded under ``files`` in the JSON."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "json": out / "backtest.json",
        "table": out / "backtest.md",
        "plot": out / "equity.png",
        "tearsheet": out / "tearsheet.html",
    }
    _save(equity_figure(comparison), files["plot"])
    files["table"].write_text(describe(comparison.doc) + "\n\n" + table(comparison.doc) + "\n")
    sheet = from_comparison(comparison, lines=describe(comparison.doc).splitlines())
    write_tearsheet(files["tearsheet"], sheet)
    if export is not None:
        index = write_export(out / "exports", [sheet.main], export)
        files["export"] = Path(index["index"])
    names = {k: str(v) for k, v in files.items()}
    write_json(files["json"], {**comparison.doc, "files": names})
    return names

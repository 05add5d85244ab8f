"""Writes the tables of :mod:`spark_ml.core.trading.exports` as CSV, JSON or Parquet files.

* ``csv``: a header row, then one row per record; a missing value is an empty field, booleans are ``true`` /
  ``false``, floats are written in full (Python's shortest round-trip form).
* ``json``: an array of objects, one per row; a missing value is ``null``.
* ``parquet``: one file per table through pyarrow, with typed columns (``int64``, ``double``, ``string``,
  ``bool``; missing values are nulls). pyarrow is not in the serving install: without it
  :class:`MissingDependency` says which extra to install.

:func:`write_export` writes a whole export: every table, the tear sheet, and ``index.json`` naming the files and
the figures.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spark_ml.core.io.tearsheet import write_tearsheet
from spark_ml.core.trading.exports import PORTFOLIO, Book, Table, book_summary, export_tables, file_token, portfolio
from spark_ml.core.trading.tearsheet import TearSheet

__all__ = [
    "FORMATS",
    "PARQUET_EXTRA",
    "MissingDependency",
    "require_pyarrow",
    "write_export",
    "write_table",
    "write_tables",
]

FORMATS = ("csv", "json", "parquet")
PARQUET_EXTRA = "train"
"""The extra of ``pyproject.toml`` that brings pyarrow."""


class MissingDependency(RuntimeError):
    """An optional library a format needs is not installed; the message says how to get it."""


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _write_csv(path: Path, table: Table) -> None:
    names = [name for name, _ in table.columns]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows([_csv_value(v) for v in row] for row in zip(*(table.data[n] for n in names), strict=True))


def _write_json(path: Path, table: Table) -> None:
    path.write_text(json.dumps(table.records(), allow_nan=False) + "\n")


def require_pyarrow() -> None:
    """Raise :class:`MissingDependency` unless pyarrow can be imported (before the first file is written)."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(
            f"--format parquet needs pyarrow, which the serving install leaves out: "
            f"pip install 'spark-ml[{PARQUET_EXTRA}]' (or pip install pyarrow)"
        ) from exc


def _write_parquet(path: Path, table: Table) -> None:
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
    schema = pa.schema([(name, kinds[kind]) for name, kind in table.columns])
    pq.write_table(pa.Table.from_pydict({n: list(table.data[n]) for n, _ in table.columns}, schema=schema), path)


_WRITERS = {"csv": _write_csv, "json": _write_json, "parquet": _write_parquet}


def write_table(path: Path, table: Table, fmt: str) -> Path:
    """Write one table as ``fmt`` at ``path`` (its suffix is the format's); returns the path written."""
    if fmt not in _WRITERS:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    path = path.parent / f"{path.name}.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    _WRITERS[fmt](path, table)
    return path


def write_tables(out: Path, tables: Mapping[str, Table], fmt: str) -> dict[str, str]:
    """Write every table under ``out`` (keys are paths without extension); returns key -> path written."""
    if fmt not in _WRITERS:
        raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        require_pyarrow()
    return {key: str(write_table(out / key, table, fmt)) for key, table in tables.items()}


def _finite(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def write_export(
    out: Path,
    books: Sequence[Book],
    fmt: str,
    *,
    whole: Book | None = None,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    sheet: TearSheet | None = None,
) -> dict[str, Any]:
    """The equity curve and trade list of every book and of the portfolio under ``out`` as ``fmt``, the tear
    sheet ``sheet`` as ``out/tearsheet.html`` when given, and ``out/index.json``: for the portfolio and each
    symbol its files and its figures: ``metrics[symbol]`` (``metrics["portfolio"]``) when given, else
    :func:`spark_ml.core.trading.exports.book_summary` (null where undefined). Returns the index."""
    whole = whole if whole is not None else portfolio(books)
    paths = write_tables(out, export_tables(books, whole), fmt)

    def entry(book: Book, key: str) -> dict[str, Any]:
        figures = metrics[book.symbol] if metrics is not None else book_summary(book)
        return {
            "equity": paths[f"{key}/equity"],
            "trades": paths[f"{key}/trades"],
            "points": int(book.ts.size),
            "metrics": _finite(figures),
        }

    index: dict[str, Any] = {
        "format": fmt,
        "portfolio": entry(whole, PORTFOLIO),
        "symbols": {b.symbol: entry(b, f"symbols/{file_token(b.symbol)}") for b in books},
        "index": str(out / "index.json"),
    }
    if sheet is not None:
        index["tearsheet"] = str(write_tearsheet(out / "tearsheet.html", sheet))
    (out / "index.json").write_text(json.dumps(index, indent=2, allow_nan=False) + "\n")
    return index

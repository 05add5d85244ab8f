"""Where series come from: the CSVs shipped in ``backtesting``, a user's OHLCV CSV, or the synthetic bed.

The synthetic bed needs nothing beyond the runtime install. A CSV needs pandas, and the built-in data sets
(EURUSD, GOOG, BTCUSD) are files of the ``backtesting`` package, which is AGPL-3.0: both come only with the
optional extra ``spark-ml[data]`` (:class:`~spark_ml.core.errors.MissingExtra` says so), so that the MIT
runtime install carries no copyleft package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from spark_ml.core.errors import InvalidInput
from spark_ml.core.extras import require
from spark_ml.core.ml.dataset import TIME_COLUMNS, Dataset, find_column, from_frame
from spark_ml.core.ml.synthetic import SyntheticConfig, generate

__all__ = ["BUILTIN", "load", "load_builtin", "load_csv"]

BUILTIN: dict[str, tuple[str, str]] = {
    "eurusd": ("EURUSD.csv", "EURUSD"),
    "goog": ("GOOG.csv", "GOOG"),
    "btcusd": ("BTCUSD.csv", "BTCUSD"),
}
"""Data name -> (file in ``backtesting/test/``, symbol)."""


def load_csv(path: Path | str, *, symbol: str | None = None, name: str | None = None) -> Dataset:
    """A user's OHLCV CSV (header row; a time column named Date/Datetime/Time/Timestamp or the first column)."""
    path = Path(path)
    pd = require("pandas", "reading a CSV", extra="data")
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise InvalidInput(f"{path}: no such file", code="data") from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InvalidInput(f"{path}: not a readable CSV: {exc}", code="data") from exc
    if frame.empty:
        raise InvalidInput(f"{path}: no rows", code="data")
    if not any(find_column(frame, n) for n in TIME_COLUMNS):
        frame = frame.set_index(frame.columns[0])
    sym = symbol or "".join(ch for ch in path.stem.upper() if ch.isalnum() or ch in "-_.")[:64] or "_"
    return from_frame(frame, name=name or str(path), symbol=sym)


def load_builtin(name: str) -> Dataset:
    """One of the CSVs shipped inside the PyPI package ``backtesting`` (no network access; ``spark-ml[data]``)."""
    try:
        filename, symbol = BUILTIN[name]
    except KeyError as exc:
        raise InvalidInput(f"unknown data {name!r}; choose one of {', '.join(BUILTIN)}", code="data") from exc
    require("backtesting", f"the built-in data set {name!r} (a file of the AGPL-3.0 package backtesting)")
    pd = require("pandas", "reading market data", extra="data")
    ref = resources.files("backtesting.test").joinpath(filename)
    with resources.as_file(ref) as path:
        frame = pd.read_csv(path, index_col=0)
    return from_frame(frame, name=name, symbol=symbol)


def load(name: str, *, seed: int = 0) -> Dataset:
    """Resolve a data name: ``synthetic``, a built-in name, or the path of a CSV file."""
    if name == "synthetic":
        return generate(SyntheticConfig(seed=seed))
    if name in BUILTIN:
        return load_builtin(name)
    path = Path(name)
    if path.suffix.lower() == ".csv" or path.exists():
        return load_csv(path)
    known = ", ".join(["synthetic", *BUILTIN])
    raise InvalidInput(f"unknown data {name!r}: not one of {known} and no such CSV file", code="data")

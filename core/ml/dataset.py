"""A market series for training and evaluation: snapshots, the features computed from them, and labels.

Every source becomes a :class:`Dataset`: one symbol's bars as :class:`spark_ml.core.codec.Snapshot` (mid = close,
``vol1m`` = the bar's volume), the feature matrix computed from them by :func:`spark_ml.core.features.series_features`
(the serving code, so training sees exactly what the worker will), and the labels.

Label of row ``i``: 1 when the next bar's close is strictly above this bar's close, else 0 (a flat bar is
"not up"). The last row has no label. Training uses the rows ``WARMUP .. n-2`` (:meth:`Dataset.rows`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.codec import Snapshot
from spark_ml.core.errors import InvalidInput
from spark_ml.core.extras import require
from spark_ml.core.features import FEATURE_NAMES, WARMUP, series_features

if TYPE_CHECKING:  # pandas is imported where a frame is read: the synthetic bed and serving never need it
    import pandas as pd

__all__ = ["MIN_ROWS", "TIME_COLUMNS", "Dataset", "find_column", "from_frame", "next_up_labels"]

MIN_ROWS = 60
"""Labelled rows after warm-up below which a series is refused: too few for any walk-forward split."""

TIME_COLUMNS = ("date", "datetime", "time", "timestamp", "ts")


@dataclass(frozen=True, eq=False)
class Dataset:
    """One symbol's bars, their features and next-move labels.

    Args:
        name: data name as given on the command line (``eurusd``, ``synthetic``, a path).
        symbol: the symbol the snapshots carry.
        snapshots: the bars, oldest first.
        features: feature matrix, one row per snapshot, columns :data:`spark_ml.core.features.FEATURE_NAMES`.
        extra: source-specific arrays aligned with the snapshots (the synthetic bed's true probabilities).
    """

    name: str
    symbol: str
    snapshots: tuple[Snapshot, ...]
    features: NDArray[np.float64]
    extra: dict[str, NDArray[np.float64]] = field(default_factory=dict)

    @property
    def ts(self) -> NDArray[np.int64]:
        """Bar timestamps, epoch milliseconds."""
        return np.fromiter((s.ts for s in self.snapshots), dtype=np.int64, count=len(self.snapshots))

    @property
    def close(self) -> NDArray[np.float64]:
        return np.fromiter((s.mid for s in self.snapshots), dtype=np.float64, count=len(self.snapshots))

    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURE_NAMES

    def rows(self) -> NDArray[np.int64]:
        """Indices of the rows used for training and evaluation: warm features and a known next bar."""
        return np.arange(WARMUP, len(self.snapshots) - 1, dtype=np.int64)

    def labels(self) -> NDArray[np.int64]:
        """Next-move labels of :meth:`rows` (1 = the next close is higher)."""
        return next_up_labels(self.close)[self.rows()]

    def xy(self) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Feature rows and labels of :meth:`rows`."""
        return self.features[self.rows()], self.labels()


def next_up_labels(close: NDArray[np.float64]) -> NDArray[np.int64]:
    """Label of every bar but the last: 1 when the next close is strictly higher, else 0."""
    return (close[1:] > close[:-1]).astype(np.int64)


def _snapshots(
    symbol: str, ts: NDArray[np.int64], close: NDArray[np.float64], volume: NDArray[np.float64] | None
) -> tuple[Snapshot, ...]:
    vols = volume.tolist() if volume is not None else [None] * len(ts)
    return tuple(
        Snapshot(int(t), float(c), symbol, vol1m=v) for t, c, v in zip(ts.tolist(), close.tolist(), vols, strict=True)
    )


def find_column(frame: pd.DataFrame, name: str) -> str | None:
    for col in frame.columns:
        if str(col).strip().lower() == name:
            return str(col)
    return None


def _timestamps(frame: pd.DataFrame, source: str) -> NDArray[np.int64]:
    """Epoch milliseconds from the first time-like column, or from the index (``index_col=0`` CSVs)."""
    pd = require("pandas", "reading market data", extra="data")
    col = next((c for c in (find_column(frame, n) for n in TIME_COLUMNS) if c is not None), None)
    raw = frame[col] if col is not None else frame.index.to_series()
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
        # Plain numbers are epoch seconds or milliseconds; 1e11 s is the year 5138, so bigger means ms.
        ms = np.where(values > 1e11, values, values * 1000.0)
        if not np.isfinite(ms).all():
            raise InvalidInput(f"{source}: the time column has missing values", code="data")
        return ms.astype(np.int64)
    try:
        parsed = pd.to_datetime(raw, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{source}: cannot parse the time column: {exc}", code="data") from exc
    if parsed.isna().any():
        raise InvalidInput(f"{source}: the time column has missing values", code="data")
    # Through a Timedelta so the result is milliseconds whatever resolution pandas chose (s, ms, us or ns).
    millis = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, unit="ms")
    return np.asarray(millis, dtype=np.int64)


def from_frame(frame: pd.DataFrame, *, name: str, symbol: str) -> Dataset:
    """Build a dataset from an OHLCV frame (a ``Close`` column, optional ``Volume``, time column or index).

    Rows are sorted by time; duplicate timestamps, missing or non-positive closes and too few rows are
    refused with :class:`~spark_ml.core.errors.InvalidInput` (code ``data``).
    """
    pd = require("pandas", "reading market data", extra="data")
    close_col = find_column(frame, "close")
    if close_col is None:
        raise InvalidInput(f"{name}: no Close column (columns: {', '.join(map(str, frame.columns))})", code="data")
    ts = _timestamps(frame, name)
    close = pd.to_numeric(frame[close_col], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(close) & (close > 0)))
    if bad.size:
        raise InvalidInput(f"{name}: row {int(bad[0]) + 1} has a missing or non-positive close", code="data")
    vol_col = find_column(frame, "volume")
    volume = None
    if vol_col is not None:
        volume = pd.to_numeric(frame[vol_col], errors="coerce").to_numpy(dtype=np.float64)
        volume = np.where(np.isfinite(volume) & (volume >= 0), volume, 0.0)
    order = np.argsort(ts, kind="stable")
    ts, close = ts[order], close[order]
    volume = volume[order] if volume is not None else None
    dup = np.flatnonzero(np.diff(ts) == 0)
    if dup.size:
        raise InvalidInput(f"{name}: duplicate timestamp {pd.Timestamp(int(ts[dup[0]]), unit='ms')}", code="data")
    if len(ts) - WARMUP - 1 < MIN_ROWS:
        raise InvalidInput(f"{name}: {len(ts)} bars, need at least {WARMUP + 1 + MIN_ROWS}", code="data")
    snaps = _snapshots(symbol, ts, close, volume)
    return Dataset(name, symbol, snaps, series_features(snaps))

"""Loaders: the CSVs shipped in ``backtesting``, a user's OHLCV CSV, labels and refusals."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spark_ml.core.errors import InvalidInput
from spark_ml.core.features import WARMUP
from spark_ml.core.ml.dataset import MIN_ROWS, from_frame, next_up_labels
from spark_ml.core.ml.sources import BUILTIN, load, load_builtin, load_csv


def _shipped(name: str) -> pd.DataFrame:
    with resources.as_file(resources.files("backtesting.test").joinpath(BUILTIN[name][0])) as path:
        return pd.read_csv(path, index_col=0, parse_dates=True)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_matches_the_shipped_csv(name: str) -> None:
    # Given the CSV read independently with pandas
    frame = _shipped(name)
    # When the loader reads it
    ds = load(name)
    # Then every bar is there, in order, close and volume carried over, time in epoch milliseconds
    assert len(ds.snapshots) == len(frame)
    assert np.array_equal(ds.close, frame["Close"].to_numpy(dtype=np.float64))
    assert [s.vol1m for s in ds.snapshots] == frame["Volume"].astype(float).tolist()
    expected_ms = [int(t.timestamp() * 1000) for t in pd.DatetimeIndex(frame.index).tz_localize("UTC")]
    assert ds.ts.tolist() == expected_ms
    assert {s.symbol for s in ds.snapshots} == {BUILTIN[name][1]}
    assert ds.features.shape == (len(frame), len(ds.feature_names))


def test_labels_are_next_move_up() -> None:
    ds = load_builtin("goog")
    close = ds.close
    x, y = ds.xy()
    rows = ds.rows()
    # Rows skip the warm-up and the last bar (whose next move is unknown)
    assert rows[0] == WARMUP and rows[-1] == len(close) - 2
    assert x.shape[0] == y.shape[0] == len(close) - WARMUP - 1
    # Label i is 1 exactly when close[i + 1] > close[i]; a flat bar is 0
    for i, label in zip(rows.tolist(), y.tolist(), strict=True):
        assert label == (1 if close[i + 1] > close[i] else 0)
    assert next_up_labels(np.array([1.0, 1.0, 2.0, 1.5])).tolist() == [0, 1, 0]


def test_user_csv_unsorted_with_date_column(tmp_path: Path) -> None:
    # Given GOOG written as a user's file: a Date column, lower-case headers, rows shuffled
    frame = _shipped("goog").reset_index(names="Date")
    frame.columns = [c.lower() for c in frame.columns]
    path = tmp_path / "my-goog.csv"
    frame.sample(frac=1.0, random_state=1).to_csv(path, index=False)
    # Then it loads sorted by time, identical to the built-in copy
    ds = load(str(path))
    ref = load_builtin("goog")
    assert ds.symbol == "MY-GOOG"
    assert np.array_equal(ds.close, ref.close)
    assert np.array_equal(ds.features, ref.features)


def test_user_csv_epoch_seconds_and_no_volume(tmp_path: Path) -> None:
    n = WARMUP + MIN_ROWS + 5
    path = tmp_path / "x.csv"
    pd.DataFrame({"timestamp": 1_700_000_000 + 60 * np.arange(n), "close": 100 + np.sin(np.arange(n))}).to_csv(
        path, index=False
    )
    ds = load_csv(path, symbol="X")
    assert ds.ts[0] == 1_700_000_000_000 and ds.ts[1] - ds.ts[0] == 60_000
    assert all(s.vol1m is None for s in ds.snapshots)


def _frame(n: int = 200) -> pd.DataFrame:
    idx = pd.date_range("2024-01-01", periods=n, freq="h")
    return pd.DataFrame({"Close": 1.0 + 0.01 * np.cos(np.arange(n)), "Volume": 10.0}, index=idx)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns="Close"), "no Close column"),
        (lambda f: f.assign(Close=f["Close"].where(f.index != f.index[7], -1.0)), "row 8"),
        (lambda f: f.assign(Close=f["Close"].where(f.index != f.index[3], np.nan)), "row 4"),
        (lambda f: f.iloc[: WARMUP + 10], "need at least"),
        (lambda f: pd.concat([f, f.iloc[[5]]]), "duplicate timestamp"),
    ],
)
def test_bad_frames_are_refused(mutate, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        from_frame(mutate(_frame()), name="bad", symbol="B")
    assert info.value.code == "data"


def test_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        load(str(tmp_path / "missing.csv"))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x00\xff\xfe" * 100)
    with pytest.raises(InvalidInput):
        load(str(binary))
    bad_time = tmp_path / "t.csv"
    bad_time.write_text("Date,Close\nnot-a-date,1.0\nnope,2.0\n")
    with pytest.raises(InvalidInput, match="time column"):
        load(str(bad_time))
    with pytest.raises(InvalidInput, match="unknown data"):
        load("nasdaq")

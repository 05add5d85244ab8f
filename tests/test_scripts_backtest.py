"""``spark-ml backtest`` end to end on a small CSV: JSON contract, files, honesty of the period, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from spark_ml.core.io.registry import Registry
from spark_ml.core.ml.evaluate import choose_folds, walk_forward
from spark_ml.core.ml.sources import load_csv
from spark_ml.core.ml.training import Recipe, train
from spark_ml.core.models import MODEL_KINDS
from spark_ml.core.trading import backtest as bt
from spark_ml.scripts import backtest as script
from tests.support.tearsheet import SECTIONS, TearSheetHtml

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("total_return", "sharpe", "max_drawdown", "var_95", "win_rate", "profit_factor", "trades")


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    n = 700
    close = 1.2 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    frame = pd.DataFrame(
        {
            "Date": pd.date_range("2021-01-04", periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
            "Open": close,
            "High": close * 1.001,
            "Low": close * 0.999,
            "Close": close,
            "Volume": rng.integers(100, 1000, n),
        }
    )
    path = tmp_path / "fx.csv"
    frame.to_csv(path, index=False)
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = script.main(list(argv))
    return code, capsys.readouterr().out


def test_json_has_the_three_strategies_and_files(csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout = _run(capsys, "--data", str(csv), "--registry", str(tmp_path / "reg"), "--json", "--out", str(out))
    assert code == 0
    report: dict[str, Any] = json.loads(stdout)
    assert set(report["strategies"]) == {"ml", "baseline", "buy_and_hold"}
    for figures in report["strategies"].values():
        assert all(k in figures for k in KEYS)
    assert report["period"]["start"] < report["period"]["end"]
    assert "lgbm" in report["models"]["ml"]
    # the files beside it: the same JSON, a Markdown table, a PNG
    assert json.loads((out / "backtest.json").read_text())["strategies"] == report["strategies"]
    md = (out / "backtest.md").read_text()
    assert all(f"| {name} |" in md for name in ("ml", "baseline", "buy_and_hold"))
    assert (out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_period_is_the_out_of_sample_test_blocks_and_buy_and_hold_matches(csv: Path, tmp_path: Path, capsys) -> None:
    code, stdout = _run(
        capsys, "--data", str(csv), "--registry", str(tmp_path / "reg"), "--json", "--out", str(tmp_path / "o")
    )
    report = json.loads(stdout)
    ds = load_csv(csv)
    rows = ds.rows()
    folds = walk_forward(rows.size, folds=choose_folds(rows.size))
    first_bar = rows[folds[0].test_start]
    # Then the period starts at the first test row, after every training row of the first fold
    assert rows[folds[0].train_end - 1] < first_bar
    assert report["period"]["bars"] == ds.close.size - first_bar
    expected = bt.buy_and_hold(ds.close[first_bar:], periods_per_year=1, cost_bp=1.0, slippage_bp=0.5)
    assert report["strategies"]["buy_and_hold"]["total_return"] == pytest.approx(expected.summary()["total_return"])


def test_costs_only_ever_lower_returns(csv: Path, tmp_path: Path, capsys) -> None:
    reports = []
    for cost in ("0", "5"):
        _, stdout = _run(
            capsys, "--data", str(csv), "--registry", str(tmp_path / "r"), "--json", "--cost-bp", cost,
            "--slippage-bp", "0", "--out", str(tmp_path / cost), "--long-short",
        )  # fmt: skip
        reports.append(json.loads(stdout)["strategies"])
    free, paid = reports
    for name in ("ml", "baseline", "buy_and_hold"):
        assert paid[name]["trades"] == free[name]["trades"]
        if free[name]["trades"]:
            assert paid[name]["total_return"] < free[name]["total_return"]


def test_table_output(csv: Path, tmp_path: Path, capsys) -> None:
    code, stdout = _run(capsys, "--data", str(csv), "--registry", str(tmp_path / "r"), "--out", str(tmp_path / "t"))
    assert code == 0
    assert "| strategy | total return | Sharpe" in stdout and "walk-forward out-of-sample" in stdout


def test_errors_exit_2(tmp_path: Path, capsys) -> None:
    code = script.main(["--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")])
    assert code == 2 and "no such file" in capsys.readouterr().err
    code = script.main(["--data", "eurusd", "--cost-bp", "-1", "--out", str(tmp_path / "y")])
    assert code == 2


@pytest.fixture(params=MODEL_KINDS)
def registry(request, csv: Path, tmp_path: Path) -> tuple[Path, str]:
    """A registry holding a model of each kind trained on the CSV, promoted to active."""
    root = tmp_path / "registry"
    ds = load_csv(csv)
    reg = Registry(root)
    manifest = train(ds, Recipe(request.param, seed=3)).register(reg)
    reg.promote(manifest.version)
    return root, manifest.version


def test_active_version_is_refitted_walk_forward(csv: Path, registry, tmp_path: Path, capsys) -> None:
    root, version = registry
    code, stdout = _run(capsys, "--data", str(csv), "--registry", str(root), "--json", "--out", str(tmp_path / "a"))
    assert code == 0
    report = json.loads(stdout)
    assert version in report["models"]["ml"] and "refitted" in report["models"]["ml"]
    # the same walk-forward as training (folds and gap from the manifest)
    manifest = Registry(root).manifest(version)
    assert len(report["folds"]) == manifest.extra["folds"]
    assert report["folds"][0]["gap"] == manifest.extra["gap"]
    # an explicit --version gives the same result; the baseline version makes ML identical to the baseline
    _, again = _run(
        capsys,
        "--data",
        str(csv),
        "--registry",
        str(root),
        "--version",
        version,
        "--json",
        "--out",
        str(tmp_path / "b"),
    )
    assert json.loads(again)["strategies"] == report["strategies"]
    _, base = _run(
        capsys, "--data", str(csv), "--registry", str(root), "--version", "baseline", "--json",
        "--out", str(tmp_path / "c"),
    )  # fmt: skip
    strategies = json.loads(base)["strategies"]
    assert strategies["ml"] == strategies["baseline"]


def test_unknown_version_exits_2(csv: Path, tmp_path: Path, capsys) -> None:
    code = script.main(["--data", str(csv), "--registry", str(tmp_path / "r"), "--version", "lgbm-deadbeef"])
    assert code == 2 and "lgbm-deadbeef" in capsys.readouterr().err


def test_tear_sheet_and_export_agree_with_the_json(csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ts"
    code, stdout = _run(capsys, "--data", str(csv), "--registry", str(tmp_path / "r"), "--json", "--out", str(out),
                        "--export", "json")  # fmt: skip
    assert code == 0
    report = json.loads(stdout)
    assert report["files"]["tearsheet"] == str(out / "tearsheet.html")
    parsed = TearSheetHtml()
    parsed.feed((out / "tearsheet.html").read_text())
    assert parsed.sections == list(SECTIONS)
    # Then every figure of every strategy in the tear sheet's table is the JSON report's, exactly
    for name, figures in report["strategies"].items():
        for key in ("total_return", "sharpe", "sortino", "max_drawdown", "var_95", "var_99", "win_rate", "trades"):
            assert parsed.cells[(name, key)] == figures[key], (name, key)
    # And the export holds the ML strategy's curve and trades, its figures those of the JSON
    index = json.loads((out / "exports" / "index.json").read_text())
    assert report["files"]["export"] == str(out / "exports" / "index.json")
    symbol = report["symbol"]
    mine = index["symbols"][symbol]["metrics"]
    for key in ("total_return", "max_drawdown", "trades", "win_rate", "exposure"):
        assert mine[key] == pytest.approx(report["strategies"]["ml"][key], rel=1e-9), key
    equity = json.loads(Path(index["symbols"][symbol]["equity"]).read_text())
    trades = json.loads(Path(index["portfolio"]["trades"]).read_text())
    assert len(equity) == report["period"]["bars"] and len(trades) == report["strategies"]["ml"]["trades"]


def test_export_errors_exit_2(csv: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    with pytest.raises(SystemExit) as exc:
        script.main(["--data", str(csv), "--export", "xls", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "invalid choice: 'xls'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    code = script.main(["--data", str(csv), "--export", "parquet", "--out", str(tmp_path / "p")])
    assert code == 2 and "spark-ml[train]" in capsys.readouterr().err and not (tmp_path / "p").exists()

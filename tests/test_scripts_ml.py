"""Smoke tests of ``spark-ml train``, ``eval`` and ``model``: real data, real registry, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spark_ml.core.io.registry import Registry
from spark_ml.scripts import eval as eval_script
from spark_ml.scripts import model as model_script
from spark_ml.scripts import train as train_script

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _run(main, argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module", params=["lgbm", "xgb"])
def trained(request, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """One synthetic training per tree kind shared by the tests below (the default bed takes a few seconds)."""
    base = tmp_path_factory.mktemp("ml")
    reg, out = base / "registry", base / "report"
    argv = ["--data", "synthetic", "--model", request.param, "--registry", str(reg), "--out", str(out)]
    code = train_script.main(argv)
    assert code == 0
    return reg, json.loads((out / "report.json").read_text())


def test_train_json_report_and_plots(tmp_path: Path, capsys) -> None:
    reg, out = tmp_path / "reg", tmp_path / "out"
    code, stdout, _ = _run(
        train_script.main,
        ["--data", "eurusd", "--model", "logistic", "--json", "--registry", str(reg), "--out", str(out)],
        capsys,
    )
    assert code == 0
    doc = json.loads(stdout)  # exactly one JSON object on stdout
    assert set(doc["metrics"]) == {"auc", "accuracy", "precision_at_20", "recall_at_20", "log_loss"}
    assert "bayes_auc" not in doc and doc["train_seconds"] > 0 and len(doc["folds"]) == 5
    assert Registry(reg).manifest(doc["version"]).metrics == pytest.approx(doc["metrics"])
    for name in ("roc.png", "calibration.png", "importance.png"):
        assert (out / name).read_bytes().startswith(PNG)
    saved = json.loads((out / "report.json").read_text())
    assert saved["version"] == doc["version"] and saved["metrics"] == doc["metrics"]


def test_train_synthetic_reports_the_bayes_limit(trained) -> None:
    _, doc = trained
    assert doc["data"] == "synthetic" and doc["kind"] in ("lgbm", "xgb")
    assert doc["version"].startswith(doc["kind"] + "-")
    assert doc["bayes_auc"] >= 0.65
    assert doc["metrics"]["auc"] <= doc["oracle_auc"] + 0.01


def test_eval_gate_writes_verdict_and_reproduces(trained, tmp_path: Path, capsys) -> None:
    reg, doc = trained
    out = tmp_path / "eval"
    code, stdout, _ = _run(
        eval_script.main, ["--version", doc["version"], "--registry", str(reg), "--out", str(out), "--json"], capsys
    )
    result = json.loads(stdout)
    assert code == (0 if result["passed"] else 1)
    assert result["passed"] == all(c["passed"] for c in result["checks"])
    assert result["reproduced"] is True and result["metrics"] == pytest.approx(doc["metrics"])
    assert {c["name"] for c in result["checks"]} >= {"auc >= 0.62", "accuracy > 0.55", "auc > baseline"}
    # every check is judged on the mean over the folds and shows the 95% interval of that mean
    for check in result["checks"]:
        low, high = check["ci95"]
        assert low <= check["value"] <= high and isinstance(check["settled"], bool)
    text = (out / "eval_result.txt").read_text().splitlines()
    assert text[0] == ("PASS" if result["passed"] else "FAIL")
    assert json.loads((out / "eval_report.json").read_text())["checks"] == result["checks"]


def test_eval_defaults_to_the_active_version(trained, tmp_path: Path, capsys) -> None:
    # The baseline is active in a fresh registry and has no training data of its own
    code, _, err = _run(eval_script.main, ["--registry", str(tmp_path / "empty")], capsys)
    assert code == 2 and "give --data" in err
    code, stdout, _ = _run(
        eval_script.main,
        ["--registry", str(tmp_path / "empty"), "--data", "goog", "--out", str(tmp_path / "b"), "--json"],
        capsys,
    )
    result = json.loads(stdout)
    # The baseline cannot beat itself: the gate fails, exit 1
    assert code == 1 and result["version"] == "baseline" and not result["passed"]


def test_model_commands(trained, tmp_path: Path, capsys) -> None:
    reg, doc = trained
    v = doc["version"]
    argv = ["--registry", str(reg), "--json"]
    code, out, _ = _run(model_script.main, ["list", *argv], capsys)
    listing = json.loads(out)
    assert code == 0 and listing["active"] == "baseline"
    assert [r["version"] for r in listing["versions"]][:1] == ["baseline"] and v in {
        r["version"] for r in listing["versions"]
    }
    code, out, _ = _run(model_script.main, ["info", v, *argv], capsys)
    assert code == 0 and json.loads(out)["sha256"] == Registry(reg).manifest(v).sha256
    assert _run(model_script.main, ["promote", v, *argv], capsys)[1].strip() == json.dumps(
        {"active": v, "previous": "baseline"}
    )
    code, out, _ = _run(model_script.main, ["shadow", "baseline", *argv], capsys)
    assert code == 0 and json.loads(out)["shadow"] == "baseline"
    code, out, _ = _run(model_script.main, ["shadow", "none", *argv], capsys)
    assert json.loads(out)["shadow"] is None
    code, out, _ = _run(model_script.main, ["rollback", *argv], capsys)
    assert code == 0 and json.loads(out)["active"] == "baseline"
    code, _, err = _run(model_script.main, ["rollback", *argv], capsys)
    assert code == 2 and err.count("\n") == 1 and "nothing to roll back" in err


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (train_script.main, ["--data", "nasdaq", "--model", "lgbm"], "unknown data 'nasdaq'"),
        (train_script.main, ["--data", "missing.csv", "--model", "lgbm"], "no such file"),
        (eval_script.main, ["--version", "lgbm-deadbeef"], "unknown version"),
        (model_script.main, ["promote", "lgbm-deadbeef"], "unknown version"),
        (model_script.main, ["info", "no such"], "unknown version"),
    ],
)
def test_errors_are_one_line_exit_2(main, argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    code, out, err = _run(main, [*argv, "--registry", str(tmp_path / "r")], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_bad_csv_and_corrupt_artifact(trained, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Open\n2024-01-01,1\n")
    code, _, err = _run(train_script.main, ["--data", str(bad), "--model", "logistic"], capsys)
    assert code == 2 and "no Close column" in err
    # Given a copy of the registry whose artifact is damaged
    reg, doc = trained
    copy = tmp_path / "reg"
    subprocess.run(["cp", "-r", str(reg), str(copy)], check=True)
    artifact = copy / "artifacts" / Registry(copy).manifest(doc["version"]).artifact
    artifact.write_bytes(artifact.read_bytes()[:-10])
    # Then promote and eval refuse it, and baseline stays active
    code, _, err = _run(model_script.main, ["promote", doc["version"], "--registry", str(copy)], capsys)
    assert code == 2 and "corrupt" in err
    code, _, err = _run(eval_script.main, ["--version", doc["version"], "--registry", str(copy)], capsys)
    assert code == 2 and "corrupt" in err
    assert Registry(copy).active_version() == "baseline"


def test_user_csv_and_env_registry(tmp_path: Path, monkeypatch, capsys) -> None:
    # Given the GOOG file as a user's CSV and the registry location only in the environment
    from importlib import resources

    src = resources.files("backtesting.test").joinpath("GOOG.csv").read_text()
    (tmp_path / "goog.csv").write_text(src)
    monkeypatch.setenv("SPARK_ML_REGISTRY", str(tmp_path / "env-reg"))
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(train_script.main, ["--data", "goog.csv", "--model", "lgbm"], capsys)
    assert code == 0 and "walk-forward" in out
    versions = Registry(tmp_path / "env-reg").list()
    assert len(versions) == 1 and versions[0].data == str(tmp_path / "goog.csv")
    assert (tmp_path / "reports" / versions[0].version / "roc.png").exists()


def _run_file(script: str, *argv: str) -> subprocess.CompletedProcess[str]:
    path = ROOT / "scripts" / script
    return subprocess.run([sys.executable, str(path), *argv], capture_output=True, text=True, timeout=60, check=False)


def test_scripts_run_as_files(tmp_path: Path) -> None:
    proc = _run_file("eval.py", "--help")
    assert proc.returncode == 0 and "usage: spark-ml eval" in proc.stdout
    proc = _run_file("model.py", "list", "--json", "--registry", str(tmp_path))
    assert proc.returncode == 0 and json.loads(proc.stdout)["active"] == "baseline"
    proc = _run_file("backtest.py", "--help")
    assert proc.returncode == 0 and "--long-short" in proc.stdout


def _register_constant(reg: Registry, intercept: float) -> str:
    from spark_ml.core.models.logistic import LogisticModel

    model = LogisticModel(("ret_1", "rsi_14"), [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], intercept)
    return reg.register(model, data="test", metrics={"auc": 0.5}, reference={}).version


def test_model_list_shows_every_version_and_marks_the_corrupt_one(tmp_path: Path, capsys) -> None:
    # Given three versions, b's manifest damaged and pointers.json unreadable
    reg = Registry(tmp_path / "reg")
    a, b, c = (_register_constant(reg, x) for x in (1.0, 2.0, 3.0))
    reg.promote(a)
    (tmp_path / "reg" / "manifests" / f"{b}.json").write_text('{"version": "')
    argv = ["--registry", str(tmp_path / "reg")]
    # Then list shows the others, marks b CORRUPT with the reason, warns on stderr, and exits 0
    code, out, err = _run(model_script.main, ["list", *argv], capsys)
    assert code == 0
    rows = {line.split()[1 if line.startswith("*") else 0]: line for line in out.splitlines()[1:-1]}
    assert set(rows) == {"baseline", a, b, c} and rows[a].startswith("* ")
    assert "CORRUPT: manifest" in rows[b] and "unreadable" in rows[b]
    assert err.count("\n") == 1 and f"1 corrupt manifest(s): {b}" in err
    code, out, _ = _run(model_script.main, ["list", "--json", *argv], capsys)
    doc = json.loads(out)
    assert code == 0 and {r["version"]: "corrupt" in r for r in doc["versions"]} == {
        "baseline": False,
        a: False,
        b: True,
        c: False,
    }
    # info on b: one line, exit 2; on the others as before
    code, out, err = _run(model_script.main, ["info", b, *argv], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "unreadable" in err
    assert _run(model_script.main, ["info", c, *argv], capsys)[0] == 0
    # An unreadable pointers.json: list says so and shows the pointers workers follow (the last-good copy)
    (tmp_path / "reg" / "pointers.json").write_text("{")
    code, out, err = _run(model_script.main, ["list", "--json", *argv], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["active"] == a and "pointers.json is unreadable" in doc["pointers_problem"]
    assert "last-good" in err


def test_model_rollback_to_a_corrupt_artifact_is_refused(tmp_path: Path, capsys) -> None:
    reg = Registry(tmp_path / "reg")
    a, b = _register_constant(reg, 1.0), _register_constant(reg, 2.0)
    reg.promote(a)
    reg.promote(b)
    artifact = tmp_path / "reg" / "artifacts" / reg.manifest(a).artifact
    artifact.write_bytes(artifact.read_bytes()[:-3])
    pointers = (tmp_path / "reg" / "pointers.json").read_bytes()
    code, out, err = _run(model_script.main, ["rollback", "--json", "--registry", str(tmp_path / "reg")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"cannot roll back to {a}, {b} stays active: artifact of {a} is corrupt" in err
    assert (tmp_path / "reg" / "pointers.json").read_bytes() == pointers

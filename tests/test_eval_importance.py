"""``spark-ml eval`` reports feature importance on the walk-forward folds: gain and permutation, JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.models import MODEL_KINDS
from spark_ml.scripts import eval as eval_script
from spark_ml.scripts import train as train_script

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_eval_report_carries_gain_and_permutation_importance(kind: str, tmp_path: Path, capsys) -> None:
    # Given a version trained on GOOG daily bars
    reg = tmp_path / "reg"
    assert train_script.main(["--data", "goog", "--model", kind, "--registry", str(reg), "--json"]) == 0
    version = json.loads(capsys.readouterr().out)["version"]
    # When it is gated
    out = tmp_path / "eval"
    code = eval_script.main(["--version", version, "--registry", str(reg), "--out", str(out), "--json"])
    doc = json.loads(capsys.readouterr().out)
    # Then the verdict stands as before, and both importances cover every feature, in the JSON and the figure
    assert code in (0, 1) and doc["passed"] is (code == 0)
    saved = json.loads((out / "eval_report.json").read_text())
    assert saved["importance"] == doc["importance"]
    assert set(doc["importance"]) == {"gain", "permutation"}
    for values in doc["importance"].values():
        assert set(values) == set(FEATURE_NAMES)
    assert all(v >= 0 for v in doc["importance"]["gain"].values())
    # shuffling some feature on the out-of-sample rows lowers the AUC: the drops measure something
    assert max(doc["importance"]["permutation"].values()) > 0
    assert (out / "importance.png").read_bytes().startswith(PNG)

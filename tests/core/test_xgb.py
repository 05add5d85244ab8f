"""XGBoost: the numpy forest scores as XGBoost itself does, and only what it can score is accepted.

The generic contract (round trip, determinism, refusals) is checked with every kind in ``test_models.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xgboost as xgb

from spark_ml.core.errors import ArtifactCorrupt
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.ml.synthetic import SyntheticConfig, generate
from spark_ml.core.models import fit_model, model_from_bytes
from spark_ml.core.models.forest import Forest, Tree
from spark_ml.core.models.xgb import XgbModel


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return generate(SyntheticConfig(n_bars=4000, seed=5)).xy()


@pytest.fixture(scope="module")
def model(data) -> XgbModel:
    x, y = data
    fitted = fit_model("xgb", x[:3000], y[:3000], feature_names=FEATURE_NAMES, seed=2)
    assert isinstance(fitted, XgbModel)
    return fitted


def _booster(model: XgbModel) -> xgb.Booster:
    return xgb.Booster(model_file=bytearray(model.to_bytes()))


def test_scores_agree_with_xgboost(model: XgbModel, data) -> None:
    # Given rows the model has not seen, some with missing values (which take each split's default side)
    x = data[0][3000:].copy()
    x[::7, 3] = np.nan
    x[::11, 0] = np.nan
    # Then the forest's scores are XGBoost's to float32 precision, and not all alike
    ours = model.predict_proba(x)
    theirs = _booster(model).inplace_predict(x)
    assert np.abs(ours - theirs).max() < 1e-6
    assert ours.std() > 0.01


def test_values_on_a_split_threshold_go_where_xgboost_sends_them(model: XgbModel, data) -> None:
    # Given rows whose features sit exactly on split thresholds (and float64 values that round onto them)
    trees = json.loads(model.to_bytes())["learner"]["gradient_booster"]["model"]["trees"]
    splits = [(f, c) for t in trees for f, c, left in zip(t["split_indices"], t["split_conditions"],
              t["left_children"], strict=True) if left >= 0]  # fmt: skip
    rng = np.random.default_rng(3)
    x = data[0][rng.integers(0, 3000, size=len(splits))].copy()
    for row, (feature, threshold) in enumerate(splits):
        x[row, feature] = float(np.float32(threshold)) * (1 + (row % 3 - 1) * 1e-9)
    # Then the forest agrees with XGBoost on each of them
    assert np.abs(model.predict_proba(x) - _booster(model).inplace_predict(x)).max() < 1e-6


def test_importance_is_xgboost_total_gain(model: XgbModel) -> None:
    theirs = _booster(model).get_score(importance_type="total_gain")
    ours = model.importance()
    assert set(ours) == set(FEATURE_NAMES) and {k for k, v in ours.items() if v > 0} == set(theirs)
    assert all(ours[k] == pytest.approx(v, rel=1e-5) for k, v in theirs.items())


def test_artifact_is_xgboost_json_with_the_parameters(model: XgbModel) -> None:
    doc = json.loads(model.to_bytes())
    assert doc["learner"]["objective"]["name"] == "binary:logistic"
    assert model.params["seed"] == 2 and model.params["num_boost_round"] == 120
    assert model_from_bytes("xgb", model.to_bytes()).params == model.params
    assert _booster(model).num_boosted_rounds() == 120


def test_min_child_weight_is_capped_for_short_series(data) -> None:
    x, y = data
    short = fit_model("xgb", x[:200], y[:200], feature_names=FEATURE_NAMES, seed=0)
    assert short.params["min_child_weight"] == 5.0
    assert np.unique(short.predict_proba(x[:200])).size > 2  # trees grew


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"objective": "reg:squarederror"}, "objective"),
        ({"objective": "binary:logistic", "booster": "dart"}, "booster"),
    ],
)
def test_models_it_cannot_serve_are_refused(data, params, reason: str) -> None:
    x, y = data
    booster = xgb.train({"nthread": 1, **params}, xgb.DMatrix(x[:500], label=y[:500]), num_boost_round=2)
    with pytest.raises(ArtifactCorrupt, match=reason):
        XgbModel.from_bytes(bytes(booster.save_raw("json")))
    # Its binary format (UBJ) is not the stored one either
    with pytest.raises(ArtifactCorrupt, match="not an XGBoost model artifact"):
        XgbModel.from_bytes(bytes(booster.save_raw("ubj")))


def _stump(left: list[int], right: list[int]) -> Tree:
    n = len(left)
    return Tree(left, right, [0] * n, [0.5] * n, [True] * n, [1.0] * n, [0.0] * n)


def test_forest_scores_a_hand_made_tree() -> None:
    # x0 < 0.5 -> leaf 1 (-1), else x1 < 2 -> leaf 3 (+2) or leaf 4 (+3); missing x0 goes right
    tree = Tree([1, -1, 3, -1, -1], [2, -1, 4, -1, -1], [0, 0, 1, 0, 0], [0.5, 0, 2.0, 0, 0],
                [False] * 5, [0, -1.0, 0, 2.0, 3.0], [4.0, 0, 1.5, 0, 0])  # fmt: skip
    forest = Forest([tree, tree], n_features=2, base_margin=0.25)
    x = np.array([[0.0, 9.0], [1.0, 1.0], [1.0, 5.0], [np.nan, 1.0]])
    assert forest.margin(x).tolist() == [-1.75, 4.25, 6.25, 4.25]
    assert forest.depth == 2 and forest.gain_by_feature().tolist() == [8.0, 3.0]


@pytest.mark.parametrize(
    ("tree", "reason"),
    [
        (_stump([1, -1], [-1, -1]), "one child"),
        (_stump([1, 2, -1], [2, 1, -1]), "distinct"),
        (_stump([1, -1, -1, 2], [3, -1, -1, 1]), "reachable|distinct"),
        (_stump([1, -1, -1, 4, -1], [2, -1, -1, 3, -1]), "reachable"),
        (Tree([1, -1, -1], [2, -1, -1], [5, 0, 0], [0.0] * 3, [True] * 3, [0.0] * 3, [0.0] * 3), "feature"),
        (_stump([], []), "non-empty"),
    ],
)
def test_malformed_trees_refused(tree: Tree, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Forest([tree], n_features=2, base_margin=0.0)


def test_serving_needs_no_xgboost(model: XgbModel, data, tmp_path) -> None:
    # Given the artifact, read back in a process where `import xgboost` fails (the runtime install has none)
    (tmp_path / "model.json").write_bytes(model.to_bytes())
    np.save(tmp_path / "x.npy", data[0][3000:3100])
    script = (
        "import sys; sys.modules['xgboost'] = None\n"
        "import numpy as np\n"
        "from spark_ml.core.models import model_from_bytes\n"
        f"m = model_from_bytes('xgb', open({str(tmp_path / 'model.json')!r}, 'rb').read())\n"
        f"np.save({str(tmp_path / 'p.npy')!r}, m.predict_proba(np.load({str(tmp_path / 'x.npy')!r})))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    # Then it scores exactly as here
    assert np.array_equal(np.load(tmp_path / "p.npy"), model.predict_proba(data[0][3000:3100]))

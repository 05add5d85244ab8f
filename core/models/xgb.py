"""Gradient-boosted trees fitted with XGBoost, stored as XGBoost's own JSON model, never pickled.

Fitting needs the ``xgboost`` package (the ``train`` extra); serving does not: the JSON model is read into a
:class:`~spark_ml.core.models.forest.Forest` and scored in numpy (why, and how closely it agrees with the
library, is in that module). Training is seeded and single-threaded, so the same data and seed give the same
bytes and therefore the same content-addressed version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.errors import ArtifactCorrupt
from spark_ml.core.extras import require
from spark_ml.core.models.base import sigmoid
from spark_ml.core.models.forest import Forest, Tree
from spark_ml.core.models.trained import TrainedModel

__all__ = ["XgbModel"]

_PARAMS_ATTR = "spark_ml_params"

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eta": 0.08,
    "max_depth": 4,
    "min_child_weight": 100.0,
    "subsample": 0.8,
    "colsample_bytree": 0.9,
    "lambda": 1.0,
    "tree_method": "hist",
    "num_boost_round": 120,
    "nthread": 1,
}
"""The LightGBM defaults' counterparts: 120 rounds of depth-4 trees at rate 0.08, and leaves of at least
about 400 rows (a hessian of 100 at p = 0.5). One thread, for the reason given in :mod:`gbt`."""


class XgbModel(TrainedModel):
    """An XGBoost binary classifier (``binary:logistic``, ``gbtree``).

    Args:
        feature_names: names of the input columns, in order.
        forest: the trees, as read from ``raw``.
        raw: the exact artifact bytes, XGBoost's JSON model (its version is their hash).
        params: the training parameters.
    """

    kind = "xgb"
    defaults = DEFAULT_PARAMS

    def __init__(
        self, feature_names: tuple[str, ...], forest: Forest, raw: bytes, params: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(feature_names, raw, params)
        self._forest = forest

    @classmethod
    def _fit(
        cls, x: NDArray[np.float64], y: NDArray[np.int64], names: tuple[str, ...], seed: int, params: dict[str, Any]
    ) -> XgbModel:
        """``min_child_weight`` is capped at a fortieth of the rows (a tenth at hessian 0.25) so that short
        series still grow trees."""
        xgb = require("xgboost", "training an XGBoost model")

        p = dict(params)
        rounds = int(p.pop("num_boost_round"))
        p["min_child_weight"] = max(1.0, min(float(p["min_child_weight"]), x.shape[0] / 40))
        p.update(seed=seed, verbosity=0)
        train = xgb.DMatrix(x, label=y, feature_names=list(names), nthread=int(p["nthread"]))
        booster = xgb.train(p, train, num_boost_round=rounds)
        # XGBoost keeps training parameters out of the model file; an attribute records them in the artifact
        booster.set_attr(**{_PARAMS_ATTR: json.dumps({**p, "num_boost_round": rounds}, sort_keys=True)})
        return cls.from_bytes(bytes(booster.save_raw("json")))

    def _score(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return sigmoid(self._forest.margin(x))

    def importance(self) -> dict[str, float]:
        """Total split gain of each feature over all trees (XGBoost's ``total_gain``)."""
        gains = self._forest.gain_by_feature()
        return {n: float(g) for n, g in zip(self._names, gains, strict=True)}

    @classmethod
    def from_bytes(cls, data: bytes) -> XgbModel:
        """Rebuild from XGBoost's JSON model (``Booster.save_raw("json")``); ArtifactCorrupt when the bytes are
        not a binary-logistic tree model of that format."""
        try:
            learner = json.loads(data)["learner"]
            names, forest = _read_learner(learner)
            params = json.loads(learner["attributes"].get(_PARAMS_ATTR, "{}"))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ArtifactCorrupt(f"not an XGBoost model artifact: {type(exc).__name__}: {exc}") from exc
        return cls(names, forest, data, params)


def _read_learner(learner: dict[str, Any]) -> tuple[tuple[str, ...], Forest]:
    """Feature names and trees of XGBoost's JSON ``learner`` object; ValueError for what cannot be served."""
    objective = learner["objective"]["name"]
    if objective != "binary:logistic":
        raise ValueError(f"objective {objective!r}, expected 'binary:logistic'")
    booster = learner["gradient_booster"]
    if booster["name"] != "gbtree":
        raise ValueError(f"booster {booster['name']!r}, expected 'gbtree'")
    param = learner["learner_model_param"]
    if int(param["num_target"]) != 1 or int(param.get("num_class", 0)) > 1:
        raise ValueError("expected one output")
    names = tuple(str(n) for n in learner["feature_names"])
    if len(names) != int(param["num_feature"]):
        raise ValueError(f"{len(names)} feature names for {param['num_feature']} features")
    # base_score is a probability ("5E-1", or "[5E-1]" since xgboost 3); the trees add to its log-odds
    base = float(str(param["base_score"]).strip("[]"))
    if not 0.0 < base < 1.0:
        raise ValueError(f"base_score {base} is not a probability")
    trees = [_read_tree(t) for t in booster["model"]["trees"]]
    return names, Forest(trees, len(names), math.log(base / (1.0 - base)))


def _read_tree(t: dict[str, Any]) -> Tree:
    if any(t["split_type"]) or t["categories"]:
        raise ValueError("categorical splits are not supported")
    if int(t["tree_param"].get("size_leaf_vector", 1)) > 1:
        raise ValueError("vector leaves are not supported")
    return Tree(
        left=t["left_children"],
        right=t["right_children"],
        feature=t["split_indices"],
        threshold=t["split_conditions"],
        default_left=[bool(d) for d in t["default_left"]],
        leaf_value=t["split_conditions"],  # a leaf keeps its value where a split keeps its threshold
        gain=t["loss_changes"],
    )

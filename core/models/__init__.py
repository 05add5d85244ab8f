"""Models: the contract, the built-in baseline, and the trained kinds (logistic, LightGBM and XGBoost
gradient-boosted trees) on one base.

Trained kinds are imported lazily (:func:`model_class`) so that a process serving the baseline never pays
for scikit-learn, LightGBM or XGBoost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.models.base import Model, sigmoid
from spark_ml.core.models.baseline import BASELINE_VERSION, BaselineModel
from spark_ml.core.models.trained import TrainedModel

__all__ = [
    "BASELINE_VERSION",
    "MODEL_KINDS",
    "BaselineModel",
    "Model",
    "TrainedModel",
    "fit_model",
    "model_class",
    "model_from_bytes",
    "sigmoid",
]

MODEL_KINDS: tuple[str, ...] = ("logistic", "lgbm", "xgb")
"""Kinds ``spark-ml train --model`` accepts."""


def model_class(kind: str) -> type[TrainedModel]:
    """The class implementing a trained kind; ValueError for an unknown kind."""
    if kind == "logistic":
        from spark_ml.core.models.logistic import LogisticModel

        return LogisticModel
    if kind == "lgbm":
        from spark_ml.core.models.gbt import GbtModel

        return GbtModel
    if kind == "xgb":
        from spark_ml.core.models.xgb import XgbModel

        return XgbModel
    raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")


def fit_model(kind: str, x: NDArray[np.float64], y: NDArray[np.int64], **options: Any) -> TrainedModel:
    """Fit a model of ``kind`` on rows ``x`` and 0/1 labels ``y``; ``options`` as :meth:`TrainedModel.fit` takes
    them (``feature_names``, ``seed``, ``params``)."""
    return model_class(kind).fit(x, y, **options)


def model_from_bytes(kind: str, data: bytes) -> TrainedModel:
    """Rebuild a stored artifact; :class:`~spark_ml.core.errors.ArtifactCorrupt` when the bytes are not one."""
    return model_class(kind).from_bytes(data)

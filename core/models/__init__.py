"""Models: the contract, the built-in baseline, and (with training) logistic and gradient-boosted trees.

Trained kinds are imported lazily (:func:`model_class`) so that a process serving the baseline never pays
for scikit-learn or LightGBM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.models.base import Model, sigmoid
from spark_ml.core.models.baseline import BASELINE_VERSION, BaselineModel

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

MODEL_KINDS: tuple[str, ...] = ("logistic", "lgbm")
"""Kinds ``spark-ml train --model`` accepts."""


class TrainedModel(Model, Protocol):
    """A model that can be fitted and stored as an artifact (no pickle)."""

    params: dict[str, Any]

    def to_bytes(self) -> bytes:
        """The artifact; its sha256 names the version."""
        ...

    def importance(self) -> dict[str, float]:
        """The model's own importance of each feature (gain for trees, |standardized coef| for logistic)."""
        ...


class _TrainedClass(Protocol):
    kind: str

    def fit(
        self,
        x: NDArray[np.float64],
        y: NDArray[np.int64],
        *,
        feature_names: Sequence[str],
        seed: int = 0,
        params: Mapping[str, Any] | None = None,
    ) -> TrainedModel: ...

    def from_bytes(self, data: bytes) -> TrainedModel: ...


def model_class(kind: str) -> _TrainedClass:
    """The class implementing a trained kind; ValueError for an unknown kind."""
    if kind == "logistic":
        from spark_ml.core.models.logistic import LogisticModel

        return LogisticModel
    if kind == "lgbm":
        from spark_ml.core.models.gbt import GbtModel

        return GbtModel
    raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")


def fit_model(
    kind: str,
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    *,
    feature_names: Sequence[str],
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """Fit a model of ``kind`` on rows ``x`` (columns ``feature_names``) and 0/1 labels ``y``."""
    return model_class(kind).fit(x, y, feature_names=feature_names, seed=seed, params=params)


def model_from_bytes(kind: str, data: bytes) -> TrainedModel:
    """Rebuild a stored artifact; :class:`~spark_ml.core.errors.ArtifactCorrupt` when the bytes are not one."""
    return model_class(kind).from_bytes(data)

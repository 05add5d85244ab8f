"""Logistic regression on standardized features, fitted with scikit-learn, stored as plain JSON.

The artifact holds the standardization (mean, scale) and the coefficients, so scoring is one matrix
product in numpy; scikit-learn is only needed to fit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.errors import ArtifactCorrupt
from spark_ml.core.extras import require
from spark_ml.core.models.base import sigmoid
from spark_ml.core.models.trained import TrainedModel

__all__ = ["LogisticModel"]

_DEFAULTS: dict[str, float] = {"C": 1.0, "max_iter": 1000}


class LogisticModel(TrainedModel):
    """A fitted logistic regression.

    Args:
        feature_names: names of the input columns, in order.
        mean: per-feature mean subtracted before scoring.
        scale: per-feature divisor (the training standard deviation, 1 for constant features).
        coef: weight of each standardized feature.
        intercept: bias term.
        params: the hyperparameters it was fitted with (recorded in the artifact).
    """

    kind = "logistic"
    defaults = _DEFAULTS

    def __init__(
        self,
        feature_names: Sequence[str],
        mean: Sequence[float],
        scale: Sequence[float],
        coef: Sequence[float],
        intercept: float,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self._mean = np.asarray(mean, dtype=np.float64)
        self._scale = np.asarray(scale, dtype=np.float64)
        self._coef = np.asarray(coef, dtype=np.float64)
        self._intercept = float(intercept)
        n = len(feature_names)
        if not (self._mean.shape == self._scale.shape == self._coef.shape == (n,)):
            raise ValueError("mean, scale and coef must have one value per feature")
        super().__init__(feature_names, self._serialize(feature_names, dict(params or {})), params)

    @classmethod
    def _fit(
        cls, x: NDArray[np.float64], y: NDArray[np.int64], names: tuple[str, ...], seed: int, params: dict[str, Any]
    ) -> LogisticModel:
        """L2 strength ``C``, on features standardized by the training mean and standard deviation."""
        LogisticRegression = require("sklearn.linear_model", "training a logistic model").LogisticRegression
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        scale = np.where(std > 1e-12, std, 1.0)
        clf = LogisticRegression(C=float(params["C"]), max_iter=int(params["max_iter"]), random_state=seed)
        clf.fit((x - mean) / scale, y)
        return cls(names, mean.tolist(), scale.tolist(), clf.coef_[0].tolist(), float(clf.intercept_[0]), params)

    def _score(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return sigmoid(((x - self._mean) / self._scale) @ self._coef + self._intercept)

    def importance(self) -> dict[str, float]:
        """Absolute standardized coefficients: the change in log-odds per standard deviation of a feature."""
        return {n: abs(float(c)) for n, c in zip(self._names, self._coef, strict=True)}

    def _serialize(self, names: Sequence[str], params: dict[str, Any]) -> bytes:
        """The artifact: canonical JSON (floats round-trip exactly through ``repr``)."""
        doc = {
            "format": "spark-ml/logistic@1",
            "feature_names": list(names),
            "mean": self._mean.tolist(),
            "scale": self._scale.tolist(),
            "coef": self._coef.tolist(),
            "intercept": self._intercept,
            "params": params,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LogisticModel:
        """Rebuild from the JSON artifact; ArtifactCorrupt when the bytes are not such an artifact."""
        try:
            doc = json.loads(data)
            if doc.get("format") != "spark-ml/logistic@1":
                raise ValueError(f"unknown format {doc.get('format')!r}")
            return cls(doc["feature_names"], doc["mean"], doc["scale"], doc["coef"], doc["intercept"], doc["params"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ArtifactCorrupt(f"not a logistic model artifact: {type(exc).__name__}: {exc}") from exc

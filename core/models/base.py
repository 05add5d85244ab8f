"""The model contract every scorer honours (baseline, logistic, gradient-boosted trees).

A model maps a float64 matrix whose columns are its ``feature_names`` to one probability per row.
It must not mutate its input, must be deterministic, and must be cheap to call once per batch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

__all__ = ["Model", "sigmoid"]


@runtime_checkable
class Model(Protocol):
    """Anything that scores feature rows."""

    @property
    def version(self) -> str:
        """Registry version (``baseline`` for the built-in model)."""
        ...

    @property
    def kind(self) -> str:
        """Model family: ``baseline``, ``logistic`` or ``lgbm``."""
        ...

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the columns ``predict_proba`` expects, a subset of ``spark_ml.core.features.FEATURE_NAMES``."""
        ...

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability that the next move is up, one per row of ``x`` (shape ``(n, len(feature_names))``)."""
        ...


def sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """Logistic function; extreme inputs neither overflow nor warn (scipy's ufunc: a tenth of numpy's cost)."""
    out: NDArray[np.float64] = expit(z)
    return out

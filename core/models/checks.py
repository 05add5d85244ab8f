"""Input checks shared by the trained models: the columns a model gets must be the ones it was fitted on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.features import FEATURE_NAMES

__all__ = ["check_fit_input", "check_matrix"]


def check_matrix(x: NDArray[np.float64], n_features: int) -> None:
    """Refuse anything but a 2-d matrix with exactly the model's number of columns (missing or extra features)."""
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"expected a matrix with {n_features} feature columns, got shape {x.shape}")


def check_fit_input(x: NDArray[np.float64], y: NDArray[np.int64], feature_names: Sequence[str]) -> tuple[str, ...]:
    """Validate training data; feature names must be known, distinct and match the columns."""
    names = tuple(feature_names)
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise ValueError(f"unknown features: {', '.join(unknown)}")
    if len(set(names)) != len(names):
        raise ValueError("feature names must be distinct")
    check_matrix(x, len(names))
    if y.shape != (x.shape[0],):
        raise ValueError(f"{x.shape[0]} rows but {y.shape} labels")
    if not np.isfinite(x).all():
        raise ValueError("training features must be finite")
    if np.unique(y).size < 2:
        raise ValueError("training labels hold one class only")
    return names

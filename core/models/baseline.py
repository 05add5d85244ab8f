"""The seeds' fixed-weight logistic model: always present, needs no training.

A mean-reversion prior: an overbought symbol (high RSI, price near the upper Bollinger band, a jump up)
is scored as more likely to move down, and wide spreads pull the score toward 0.5-. The weights are
fixed by hand, not fitted; offline evaluation measures what they are worth.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.models.base import sigmoid

__all__ = ["BASELINE_VERSION", "BaselineModel"]

BASELINE_VERSION = "baseline"

# feature -> (centre, weight): z = sum(weight * (x - centre))
_WEIGHTS: dict[str, tuple[float, float]] = {
    "ret_1": (0.0, -0.02),
    "spread_bp": (0.0, -0.01),
    "vol_20": (0.0, -0.002),
    "rsi_14": (50.0, -0.03),
    "log_vol": (0.0, 0.002),
    "bb_pctb": (0.5, -0.8),
}


class BaselineModel:
    """Fixed-weight logistic regression over six features."""

    version = BASELINE_VERSION
    kind = "baseline"
    feature_names: tuple[str, ...] = tuple(_WEIGHTS)

    def __init__(self) -> None:
        self._centre = np.array([c for c, _ in _WEIGHTS.values()], dtype=np.float64)
        self._weight = np.array([w for _, w in _WEIGHTS.values()], dtype=np.float64)

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return sigmoid((x - self._centre) @ self._weight)

"""Models: the contract, the built-in baseline, and (with training) logistic and gradient-boosted trees."""

from core.models.base import Model, sigmoid
from core.models.baseline import BASELINE_VERSION, BaselineModel

__all__ = ["BASELINE_VERSION", "BaselineModel", "Model", "sigmoid"]

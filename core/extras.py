"""Optional dependencies: which extra installs each, and one import helper that names it when it is missing.

``pip install spark-ml`` installs what serving needs (the baseline model, logistic artifacts, the gateway);
training, evaluation, reports and plots come with ``spark-ml[train]``, the built-in market data sets with
``spark-ml[data]`` (the ``backtesting`` package, AGPL-3.0), tracing with ``spark-ml[otel]``; ``spark-ml[lgbm]``
serves LightGBM models without the rest of training.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from spark_ml.core.errors import MissingExtra

__all__ = ["EXTRA_OF", "extra_of", "require"]

EXTRA_OF: dict[str, str] = {
    "lightgbm": "train",
    "sklearn": "train",
    "scipy": "train",
    "pandas": "train",
    "matplotlib": "train",
    "xgboost": "train",
    "pyarrow": "train",
    "backtesting": "data",
    "opentelemetry": "otel",
    "faststream": "dev",
}
"""Top-level import name -> the extra of ``pyproject.toml`` that installs it."""


def extra_of(module: str) -> str | None:
    """The extra that installs ``module`` (a dotted name is looked up by its top-level package), or None."""
    return EXTRA_OF.get(module.partition(".")[0])


def require(module: str, purpose: str, *, extra: str | None = None) -> ModuleType:
    """Import ``module``; :class:`~spark_ml.core.errors.MissingExtra` naming its extra when it is not installed.

    Args:
        module: the import name.
        purpose: what needs it, for the message (``training a LightGBM model``).
        extra: the extra to name, when not the one :data:`EXTRA_OF` gives.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name is None or exc.name.partition(".")[0] != top:
            raise  # the package is there but one of its own dependencies is missing: not ours to rename
        raise MissingExtra(top, extra or EXTRA_OF.get(top, "train"), purpose) from exc

"""The base of every trained model: fitting checks, the content-addressed version, the artifact bytes.

A subclass says how to fit (:meth:`TrainedModel._fit`), score, rank its features and read its artifact back;
the base checks the training data, merges the parameters over the kind's defaults and names the version
after the artifact's sha256, so the same bytes are always the same version.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.models.checks import check_fit_input, check_matrix

__all__ = ["TrainedModel"]


class TrainedModel(ABC):
    """A model that is fitted on data and stored as an artifact (never pickled).

    Args:
        feature_names: names of the input columns, in order.
        raw: the exact artifact bytes (its sha256 names the version).
        params: the parameters it was fitted with (recorded in the artifact).
    """

    kind: ClassVar[str]
    """Model family, the registry's name for it (``logistic``, ``lgbm``, ``xgb``)."""
    defaults: ClassVar[Mapping[str, Any]] = {}
    """Parameters a fit uses where the caller gives none."""

    def __init__(self, feature_names: Sequence[str], raw: bytes, params: Mapping[str, Any] | None = None) -> None:
        self._names = tuple(str(n) for n in feature_names)
        self._raw = raw
        self.params: dict[str, Any] = dict(params or {})
        self._version = f"{self.kind}-{hashlib.sha256(raw).hexdigest()[:8]}"

    @property
    def version(self) -> str:
        """``<kind>-<first 8 hex of the artifact's sha256>``."""
        return self._version

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the columns :meth:`predict_proba` expects."""
        return self._names

    @classmethod
    def fit(
        cls,
        x: NDArray[np.float64],
        y: NDArray[np.int64],
        *,
        feature_names: Sequence[str],
        seed: int = 0,
        params: Mapping[str, Any] | None = None,
    ) -> Self:
        """Fit on rows ``x`` (columns ``feature_names``) and 0/1 labels ``y``; ValueError for bad training data."""
        names = check_fit_input(x, y, feature_names)
        return cls._fit(x, y, names, seed, {**cls.defaults, **(params or {})})

    @classmethod
    @abstractmethod
    def _fit(
        cls, x: NDArray[np.float64], y: NDArray[np.int64], names: tuple[str, ...], seed: int, params: dict[str, Any]
    ) -> Self:
        """Fit checked data with the merged parameters."""

    @classmethod
    @abstractmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Rebuild from :meth:`to_bytes`; :class:`~spark_ml.core.errors.ArtifactCorrupt` when the bytes are not one."""

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability that the next move is up, one per row of ``x`` (exactly the model's columns)."""
        check_matrix(x, len(self._names))
        return self._score(x)

    @abstractmethod
    def _score(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Score a checked matrix."""

    @abstractmethod
    def importance(self) -> dict[str, float]:
        """The model's own importance of each feature (gain for trees, |standardized coef| for logistic)."""

    def to_bytes(self) -> bytes:
        """The artifact; its sha256 names the version."""
        return self._raw

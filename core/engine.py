"""Snapshots in, predictions out: features, one model call per batch, signals, output checks.

The engine is synchronous and pure (the clock is passed in), so one batch is always scored by one model
version: the transport swaps :attr:`Engine.model` only between batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from core.codec import Snapshot, prediction_wire
from core.errors import InvalidInput, ModelError, SparkMlError
from core.features import FEATURE_NAMES, N_FEATURES, FeatureStore
from core.models.base import Model

__all__ = ["BatchResult", "Engine", "SignalPolicy"]

_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass(frozen=True, slots=True)
class SignalPolicy:
    """How a score becomes a signal: buy above ``0.5 + margin``, sell below ``0.5 - margin``, else hold.

    Confidence is ``|score - 0.5| * 2``: 0 at a coin flip, 1 at certainty.
    """

    margin: float = 0.05

    def signals(self, scores: NDArray[np.float64]) -> list[str]:
        hi, lo = 0.5 + self.margin, 0.5 - self.margin
        return ["buy" if s >= hi else "sell" if s <= lo else "hold" for s in scores.tolist()]


@dataclass(slots=True)
class BatchResult:
    """The outcome of one batch: the scored snapshots and those refused, each with its reason."""

    model_version: str
    feature_names: tuple[str, ...]
    snaps: list[Snapshot] = field(default_factory=list)
    x: NDArray[np.float64] = field(default_factory=lambda: np.empty((0, 0)))
    """Model input rows (columns = ``feature_names``)."""
    full: NDArray[np.float64] = field(default_factory=lambda: np.empty((0, N_FEATURES)))
    """All features of the scored rows (columns = ``FEATURE_NAMES``), for shadow models and drift."""
    scores: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    signals: list[str] = field(default_factory=list)
    rejected: list[tuple[Snapshot, SparkMlError]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    """Receive-to-publish latency of each prediction, filled in by :meth:`wire`."""

    def wire(self, now: float) -> list[dict[str, object]]:
        """Predictions as plain data; ``now`` is ``time.perf_counter()`` at publish time."""
        out = []
        names = self.feature_names
        rows = self.x.tolist()
        conf = (np.abs(self.scores - 0.5) * 2.0).tolist()
        lat = self.latencies_ms = [max((now - s.recv) * 1000.0, 0.0) if s.recv else 0.0 for s in self.snaps]
        for snap, score, signal, c, row, ms in zip(
            self.snaps, self.scores.tolist(), self.signals, conf, rows, lat, strict=True
        ):
            out.append(prediction_wire(snap, score, signal, c, self.model_version, names, row, ms))
        return out


def columns_for(model: Model) -> list[int]:
    """Indices of a model's features in the full vector; raises ModelError for unknown names."""
    try:
        return [_INDEX[n] for n in model.feature_names]
    except KeyError as exc:
        raise ModelError(f"model {model.version} wants unknown feature {exc.args[0]!r}") from exc


def score(model: Model, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Run a model and refuse anything that is not one finite probability per row."""
    try:
        scores = np.asarray(model.predict_proba(x), dtype=np.float64)
    except Exception as exc:
        raise ModelError(f"model {model.version} failed: {type(exc).__name__}: {exc}") from exc
    if scores.shape != (x.shape[0],):
        raise ModelError(f"model {model.version} returned shape {scores.shape} for {x.shape[0]} rows")
    return scores


class Engine:
    """Turns batches of snapshots into predictions with per-symbol feature state.

    Args:
        model: the live model.
        features: per-symbol state; shared with the request-reply path when both run in one process.
        policy: score-to-signal thresholds.
    """

    def __init__(self, model: Model, *, features: FeatureStore | None = None, policy: SignalPolicy | None = None):
        self.features = features if features is not None else FeatureStore()
        self.policy = policy or SignalPolicy()
        self._model = model
        self._cols = columns_for(model)

    @property
    def model(self) -> Model:
        return self._model

    @model.setter
    def model(self, model: Model) -> None:
        cols = columns_for(model)
        self._model, self._cols = model, cols

    def run_batch(self, snaps: Sequence[Snapshot], *, commit: bool = True) -> BatchResult:
        """Features for every snapshot (in order), one model call, signals; bad rows go to ``rejected``.

        ``commit=False`` computes features without advancing the per-symbol state (request-reply).
        """
        model, cols = self._model, self._cols
        result = BatchResult(model.version, tuple(model.feature_names))
        rows: list[list[float]] = []
        ok: list[Snapshot] = []
        feats = self.features
        step = feats.update if commit else feats.peek
        for snap in snaps:
            try:
                rows.append(step(snap))
            except InvalidInput as exc:
                result.rejected.append((snap, exc))
                continue
            except (ArithmeticError, ValueError) as exc:  # extreme inputs: refuse the row, keep the batch
                result.rejected.append((snap, InvalidInput(f"features failed: {exc}", code="non_finite_features")))
                continue
            ok.append(snap)
        if not ok:
            return result
        full = np.array(rows, dtype=np.float64)
        finite = np.isfinite(full).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite).tolist()
            for i in bad:
                result.rejected.append((ok[i], InvalidInput("features are not finite", code="non_finite_features")))
            keep = np.flatnonzero(finite)
            full = full[keep]
            ok = [ok[i] for i in keep.tolist()]
            if not ok:
                return result
        x = full[:, cols]
        try:
            scores = score(model, x)
        except ModelError as exc:
            result.rejected.extend((s, exc) for s in ok)
            return result
        valid = np.isfinite(scores) & (scores >= 0.0) & (scores <= 1.0)
        if not valid.all():
            err = ModelError(f"model {model.version} returned a score outside [0, 1]", code="model_output")
            for i in np.flatnonzero(~valid).tolist():
                result.rejected.append((ok[i], err))
            keep = np.flatnonzero(valid)
            ok, x, full, scores = [ok[i] for i in keep.tolist()], x[keep], full[keep], scores[keep]
        result.snaps, result.x, result.full, result.scores = ok, x, full, scores
        result.signals = self.policy.signals(scores)
        return result

"""Snapshots in, predictions out: features, one model call per batch, signals, output checks.

The engine is synchronous and pure (the clock is passed in), so one batch is always scored by one model
version: the transport swaps :attr:`Engine.model` only between batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from spark_ml.core.codec import Encoding, Snapshot, encode, prediction_wire
from spark_ml.core.errors import InvalidInput, ModelError, SparkMlError
from spark_ml.core.features import FEATURE_NAMES, N_FEATURES, FeatureStore
from spark_ml.core.models.base import Model
from spark_ml.core.predwire import PredictionPacker

__all__ = ["BatchResult", "Engine", "SignalPolicy"]

_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
# Shared empty defaults (never written to): a fresh np.empty per BatchResult cost microseconds per batch.
_EMPTY_2D: NDArray[np.float64] = np.empty((0, 0))
_EMPTY_FULL: NDArray[np.float64] = np.empty((0, N_FEATURES))
_EMPTY_1D: NDArray[np.float64] = np.empty(0)
for _a in (_EMPTY_2D, _EMPTY_FULL, _EMPTY_1D):
    _a.flags.writeable = False
_PACK_MANY_MIN = 32
"""From this batch size on, predictions are packed column by column (below it the fixed cost dominates)."""


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
    x: NDArray[np.float64] = field(default_factory=lambda: _EMPTY_2D)
    """Model input rows (columns = ``feature_names``)."""
    full: NDArray[np.float64] = field(default_factory=lambda: _EMPTY_FULL)
    """All features of the scored rows (columns = ``FEATURE_NAMES``), for shadow models and drift."""
    scores: NDArray[np.float64] = field(default_factory=lambda: _EMPTY_1D)
    signals: list[str] = field(default_factory=list)
    rejected: list[tuple[Snapshot, SparkMlError]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    """Receive-to-publish latency of each prediction, filled in by :meth:`wire` or :meth:`encode`."""
    packer: PredictionPacker | None = None
    encodings: Encoding | list[Encoding] = "msgpack"
    """The encoding of the payloads :meth:`encode` made: one for all of them, or one per payload."""

    def _latencies(self, now: float) -> list[float]:
        lat = self.latencies_ms = [(now - s.recv) * 1000.0 if s.recv else 0.0 for s in self.snaps]
        return lat

    def wire(self, now: float) -> list[dict[str, object]]:
        """Predictions as plain data; ``now`` is ``time.perf_counter()`` at publish time."""
        names = self.feature_names
        version = self.model_version
        lat = self._latencies(now)
        return [
            prediction_wire(snap, score, signal, abs(score - 0.5) * 2.0, version, names, row, ms)
            for snap, score, signal, row, ms in zip(
                self.snaps, self.scores.tolist(), self.signals, self.x.tolist(), lat, strict=True
            )
        ]

    def encode(self, now: float, output: Encoding | None = None) -> list[bytes]:
        """Predictions as bytes (the stream's path): all in ``output``, or with None each in the encoding its
        snapshot came in. :attr:`encodings` says which each got."""
        packer = self.packer
        if packer is None:
            packer = self.packer = PredictionPacker(self.model_version, self.feature_names)
        snaps = self.snaps
        if output is None:
            first = snaps[0].encoding if snaps else "msgpack"
            if all(s.encoding == first for s in snaps):
                output = first
        if output is not None:
            self.encodings = output
            if output == "json":
                return self._encode_json(now)
        else:
            self.encodings = [s.encoding for s in snaps]
        if len(snaps) >= _PACK_MANY_MIN and output == "msgpack":
            recv = np.array([s.recv for s in snaps])
            lat_arr = (now - recv) * 1000.0
            lat_arr[recv == 0.0] = 0.0
            self.latencies_ms = lat_arr.tolist()
            return packer.pack_many(
                [s.ts for s in snaps], [s.symbol for s in snaps], self.scores, self.signals, self.x, lat_arr
            )
        pack = packer.pack
        version, names = self.model_version, self.feature_names
        lat = self._latencies(now)
        out = []
        for snap, score, signal, row, ms, enc in zip(
            self.snaps,
            self.scores.tolist(),
            self.signals,
            self.x.tolist(),
            lat,
            [output] * len(snaps) if output is not None else self.encodings,
            strict=True,
        ):
            conf = abs(score - 0.5) * 2.0
            if enc == "msgpack":
                out.append(pack(snap.ts, snap.symbol, score, signal, conf, row, ms))
            else:
                out.append(encode(prediction_wire(snap, score, signal, conf, version, names, row, ms), "json"))
        return out

    def _encode_json(self, now: float) -> list[bytes]:
        return [encode(p, "json") for p in self.wire(now)]


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
        self.model = model

    @property
    def model(self) -> Model:
        return self._model

    @model.setter
    def model(self, model: Model) -> None:
        cols = columns_for(model)
        # Identity selection is skipped: a fancy-index copy is a fixed cost on every batch.
        take = None if cols == list(range(N_FEATURES)) else np.asarray(cols, dtype=np.intp)
        packer = PredictionPacker(model.version, model.feature_names)
        self._model, self._cols, self._take, self._packer = model, cols, take, packer

    def run_batch(self, snaps: Sequence[Snapshot], *, commit: bool = True) -> BatchResult:
        """Features for every snapshot (in order), one model call, signals; bad rows go to ``rejected``.

        ``commit=False`` computes features without advancing the per-symbol state (request-reply).
        """
        model, take, packer = self._model, self._take, self._packer
        result = BatchResult(model.version, packer.feature_names, packer=packer)
        rows: list[list[float]] = []
        ok: list[Snapshot] = []
        step = self.features.update if commit else self.features.peek
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
        if not np.isfinite(full).all():
            ok, full = _drop_non_finite(ok, full, result)
            if not ok:
                return result
        x = full if take is None else full[:, take]  # same indexing as training: bit-identical scores
        try:
            scores = score(model, x)
        except ModelError as exc:
            result.rejected.extend((s, exc) for s in ok)
            return result
        # NaN fails both comparisons, so this also refuses non-finite scores.
        if not ((scores >= 0.0) & (scores <= 1.0)).all():
            keep = _drop_bad_scores(ok, scores, model.version, result)
            ok, x, full, scores = [ok[i] for i in keep.tolist()], x[keep], full[keep], scores[keep]
        result.snaps, result.x, result.full, result.scores = ok, x, full, scores
        result.signals = self.policy.signals(scores)
        return result


def _drop_non_finite(
    ok: list[Snapshot], full: NDArray[np.float64], result: BatchResult
) -> tuple[list[Snapshot], NDArray[np.float64]]:
    finite = np.isfinite(full).all(axis=1)
    for i in np.flatnonzero(~finite).tolist():
        result.rejected.append((ok[i], InvalidInput("features are not finite", code="non_finite_features")))
    keep = np.flatnonzero(finite)
    return [ok[i] for i in keep.tolist()], full[keep]


def _drop_bad_scores(
    ok: list[Snapshot], scores: NDArray[np.float64], version: str, result: BatchResult
) -> NDArray[np.intp]:
    valid = (scores >= 0.0) & (scores <= 1.0)
    err = ModelError(f"model {version} returned a score outside [0, 1]", code="model_output")
    for i in np.flatnonzero(~valid).tolist():
        result.rejected.append((ok[i], err))
    return np.flatnonzero(valid)

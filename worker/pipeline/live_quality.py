"""Live model quality of the active and shadow models, from the stream's own labels (``core/ml/live_quality``).

An observer of the stream processor hands every published batch to :class:`LiveQuality`; the shadow scorer
reports its scores (or a skip) for the same batch. The join itself is a few hundred nanoseconds a row; the
figures (a sort of each window) are computed only when Prometheus scrapes, at most every
``live_quality_export_s``, and for ``ml.model.info`` / ``ml.model.quality`` requests.

Windows are per worker: with partitions, each worker scores the symbols it owns. ``ml.model.quality`` (every
worker answers, no queue group) returns each worker's windows, so ``spark-ml model compare`` pools them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from nats.aio.msg import Msg
from numpy.typing import NDArray

from spark_ml.core.engine import BatchResult
from spark_ml.core.features import FeatureStore
from spark_ml.core.ml.live_quality import LIVE_METRICS, LiveQuality, VersionQuality
from spark_ml.worker.metrics import Metrics

__all__ = ["LiveQualityTracker", "decode_window", "encode_window"]

log = logging.getLogger(__name__)


def encode_window(labels: NDArray[np.int64], scores: NDArray[np.float64]) -> dict[str, str]:
    """A window as JSON-safe text: labels as bytes 0/1, scores as little-endian float64, both base64."""
    return {
        "labels": base64.b64encode(labels.astype(np.uint8).tobytes()).decode(),
        "scores": base64.b64encode(scores.astype("<f8").tobytes()).decode(),
    }


def decode_window(doc: dict[str, Any]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The inverse of :func:`encode_window`; ValueError when the two do not fit together."""
    labels = np.frombuffer(base64.b64decode(doc["labels"]), dtype=np.uint8).astype(np.int64)
    scores = np.frombuffer(base64.b64decode(doc["scores"]), dtype="<f8").astype(np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"a window of {labels.size} labels and {scores.size} scores")
    return labels, scores


class LiveQualityTracker:
    """Joins labels, exports ``ml_live_*`` per model version, answers ``ml.model.quality``.

    Args:
        metrics: where the ``ml_live_*`` and ``ml_model_offline_auc_lower`` series live.
        features: the engine's feature store: a symbol's count of snapshots (warm-up), and the symbols whose
            history here ends (a partition moved) to forget.
        window: labelled predictions kept per model version.
        min_rows: a version's figures are exported once its window holds this many rows (a handful of
            labels makes a noisy AUC, and the alert compares it).
        export_s: figures are recomputed at most this often at scrape time.
        max_symbols: symbols whose pending prediction is always kept (the feature store's bound).
    """

    def __init__(
        self,
        metrics: Metrics,
        features: FeatureStore,
        *,
        window: int,
        min_rows: int,
        export_s: float,
        max_symbols: int,
    ) -> None:
        self.metrics = metrics
        self.features = features
        self.min_rows = min_rows
        self.export_s = export_s
        self.quality = LiveQuality(window=window, max_symbols=max_symbols, count_of=self._count_of)
        features.on_forget = self.quality.forget
        self._exported_at = -math.inf
        self._report: list[VersionQuality] = []
        self._counted: dict[tuple[str, str], int] = {}
        self._series: set[tuple[str, str]] = set()
        self._bounds: set[str] = set()

    def _count_of(self, symbol: str) -> int:
        return self.features.state(symbol).n if symbol in self.features else 0

    def set_models(self, active: str, shadow: str | None, offline_auc_lower: dict[str, float]) -> None:
        """The versions now served, and the lower bound of each one's offline 95% AUC interval (when known)."""
        self.quality.set_versions(active, shadow)
        for version in self._bounds - set(offline_auc_lower):
            with contextlib.suppress(KeyError):
                self.metrics.offline_auc_lower.remove(version)
        for version, low in offline_auc_lower.items():
            self.metrics.offline_auc_lower.labels(version).set(low)
        self._bounds = set(offline_auc_lower)
        self._exported_at = -math.inf

    def observe(self, result: BatchResult) -> None:
        """A published batch (the stream processor's observer)."""
        self.quality.observe(result, result.snaps, result.scores.tolist(), result.model_version)

    def shadow_scored(self, result: BatchResult, version: str, scores: Sequence[float] | None) -> None:
        """The shadow's scores of ``result`` (None: skipped or failed)."""
        self.quality.shadow_scored(result, version, scores)

    def report(self) -> list[VersionQuality]:
        """Each served version's figures, recomputed at most every ``export_s``."""
        now = time.monotonic()
        if now - self._exported_at >= self.export_s:
            self._report = self.quality.report()
            self._exported_at = now
        return self._report

    def export(self) -> None:
        """Set the ``ml_live_*`` series (before each scrape)."""
        m = self.metrics
        gauges = {
            "auc": m.live_auc,
            "accuracy": m.live_accuracy,
            "log_loss": m.live_log_loss,
            "brier": m.live_brier,
        }
        shown: set[tuple[str, str]] = set()
        for q in self.report():
            key = (q.version, q.role)
            done = self._counted.get(key, 0)
            if q.labelled < done:  # the window was made anew (a version dropped and served again)
                done = 0
            if q.labelled > done:
                m.live_labelled.labels(*key).inc(q.labelled - done)
            self._counted[key] = q.labelled
            m.live_window_rows.labels(*key).set(q.rows)
            if q.rows < self.min_rows:
                continue
            for name in LIVE_METRICS:
                value = q.figures[name]
                if not math.isnan(value):
                    gauges[name].labels(*key).set(value)
                    shown.add(key)
        self._drop_series(gauges.values(), shown, {(q.version, q.role) for q in self._report})

    def _drop_series(self, gauges: Iterable[Any], shown: set[tuple[str, str]], served: set[tuple[str, str]]) -> None:
        m = self.metrics
        for key in self._series - shown:
            for gauge in gauges:
                with contextlib.suppress(KeyError):
                    gauge.remove(*key)
        for key in set(self._counted) - served:
            for family in (m.live_labelled, m.live_window_rows):
                with contextlib.suppress(KeyError):
                    family.remove(*key)
            del self._counted[key]
        self._series = shown

    def info(self, *, windows: bool = False) -> list[dict[str, Any]]:
        """This worker's figures per served version (with the windows themselves when ``windows``)."""
        out = []
        for q in self.quality.report():
            row: dict[str, Any] = q.as_dict()
            row["minRows"] = self.min_rows
            if windows:
                row["window"] = encode_window(*self.quality.windows[q.version].arrays())
            out.append(row)
        return out

    async def on_request(self, msg: Msg) -> None:
        """``ml.model.quality``: this worker's figures; a body ``{"windows": true}`` adds the windows."""
        try:
            request = json.loads(msg.data) if msg.data else {}
            if not isinstance(request, dict):
                raise ValueError("the request must be a JSON object")
            want = bool(request.get("windows", False))
        except ValueError as exc:
            error = {"error": {"code": "bad_request", "message": f"ml.model.quality: {exc}"}}
            with contextlib.suppress(Exception):
                await _respond_json(msg, error)
            return
        try:
            body = {"worker": f"{os.uname().nodename}:{os.getpid()}", "versions": self.info(windows=want)}
            await _respond_json(msg, body)
        except Exception:
            log.exception("ml.model.quality: could not answer")


async def _respond_json(msg: Msg, body: object) -> None:
    """Reply with JSON and say so: ``Msg.respond`` sends ``msg.headers`` with the reply (the request's, else)."""
    msg.headers = {"Content-Type": "application/json"}
    await msg.respond(json.dumps(body).encode())

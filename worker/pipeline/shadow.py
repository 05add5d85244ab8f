"""Shadow scoring and drift tracking, off the live path.

The shadow model scores the same feature rows as the live model, in a worker thread, one batch at a
time: when the previous shadow batch is still running the new one is skipped and counted, so a slow or
failing shadow model can never delay or break live predictions. Its predictions go only to
``ml.prediction.shadow``; the share of equal live/shadow signals over a sliding window is the gauge
``ml_shadow_agreement_ratio``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from nats.aio.client import Client
from numpy.typing import NDArray
from prometheus_client import Gauge

from spark_ml.core import subjects
from spark_ml.core.codec import encode
from spark_ml.core.engine import BatchResult, SignalPolicy, columns_for, score
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.ml.drift import DriftMonitor, DriftThresholds, load_thresholds
from spark_ml.core.models import Model
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.pipeline.publish import content_headers

__all__ = ["DriftTracker", "ShadowScorer"]

log = logging.getLogger(__name__)


class ShadowScorer:
    """Scores live batches with a candidate model and publishes on ``ml.prediction.shadow``.

    Args:
        nc: connection to publish on.
        metrics: where agreement, errors and skips are counted.
        policy: the live signal policy (signals must be comparable).
        window: rows in the agreement window.
        on_scored: told of each live batch handed over: the shadow's version and scores, or None when it
            skipped or failed the batch (live quality labels the shadow's predictions with it).
    """

    def __init__(
        self,
        nc: Client,
        metrics: Metrics,
        policy: SignalPolicy,
        *,
        window: int = 1000,
        on_scored: Callable[[BatchResult, str, Sequence[float] | None], None] | None = None,
    ) -> None:
        self.nc = nc
        self._on_scored = on_scored
        self.metrics = metrics
        self.policy = policy
        self._model: Model | None = None
        self._cols: list[int] = []
        self._agree: deque[bool] = deque(maxlen=window)
        self._agree_sum = 0
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spark-ml-shadow")
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def model(self) -> Model | None:
        return self._model

    @model.setter
    def model(self, model: Model | None) -> None:
        self._cols = columns_for(model) if model is not None else []
        if self._model is not None:
            with contextlib.suppress(KeyError):
                self.metrics.shadow_agreement.remove(self._model.version)
        self._model = model
        self._agree.clear()
        self._agree_sum = 0

    def submit(self, result: BatchResult) -> None:
        """Hand a scored live batch to the shadow model, unless it is still busy with the previous one."""
        model = self._model
        if model is None or not result.snaps:
            return
        if self._busy:
            self.metrics.shadow_skipped.inc(len(result.snaps))
            self._tell(result, model.version, None)
            return
        self._busy = True
        x = result.full[:, self._cols]
        fut = asyncio.get_running_loop().run_in_executor(self._executor, score, model, x)
        task = asyncio.create_task(self._finish(model, fut, result, x))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(
        self, model: Model, fut: asyncio.Future[NDArray[np.float64]], live: BatchResult, x: NDArray[np.float64]
    ) -> None:
        try:
            scores = await fut
            valid = np.isfinite(scores) & (scores >= 0.0) & (scores <= 1.0)
            if not valid.all():
                raise ValueError("shadow model returned a score outside [0, 1]")
            self._tell(live, model.version, scores.tolist())
            signals = self.policy.signals(scores)
            conf = (np.abs(scores - 0.5) * 2.0).tolist()
            names = model.feature_names
            encodings = live.encodings  # as the live predictions went out
            for i, snap in enumerate(live.snaps):
                wire = {
                    "ts": snap.ts,
                    "symbol": snap.symbol,
                    "score": float(scores[i]),
                    "signal": signals[i],
                    "confidence": conf[i],
                    "modelVersion": model.version,
                    "features": dict(zip(names, x[i].tolist(), strict=True)),
                    "latencyMs": live.latencies_ms[i] if live.latencies_ms else 0.0,
                    "liveVersion": live.model_version,
                    "liveSignal": live.signals[i],
                }
                enc = encodings if isinstance(encodings, str) else encodings[i]
                headers = content_headers(enc, snap.trace)  # its trace goes on, as on its live prediction
                await self.nc.publish(subjects.PREDICTION_SHADOW, encode(wire, enc), headers=headers)
            self._record(model.version, live.signals, signals)
        except Exception as exc:
            self.metrics.model_errors.labels("shadow_error").inc()
            log.warning("shadow model %s failed: %s", model.version, exc)
            self._tell(live, model.version, None)
        finally:
            self._busy = False

    def _tell(self, live: BatchResult, version: str, scores: Sequence[float] | None) -> None:
        if self._on_scored is not None:
            try:
                self._on_scored(live, version, scores)
            except Exception:
                log.exception("shadow score observer failed")

    def _record(self, version: str, live: list[str], shadow: list[str]) -> None:
        window = self._agree
        for a, b in zip(live, shadow, strict=True):
            if len(window) == window.maxlen:
                self._agree_sum -= window[0]
            same = a == b
            window.append(same)
            self._agree_sum += same
        if window and self._model is not None and self._model.version == version:
            self.metrics.shadow_agreement.labels(version).set(self._agree_sum / len(window))

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2.0)
        self._executor.shutdown(wait=False, cancel_futures=True)


class DriftTracker:
    """PSI of live features against the live model's reference, exported at scrape time.

    The window and the per-feature warning/critical levels come from ``core/drift.toml``; the levels are
    exported as ``ml_feature_drift_threshold{feature,severity}`` so alert rules compare against them
    instead of copying numbers. The window pools every symbol this worker scores.

    Args:
        metrics: where the PSI and threshold gauges live.
        thresholds: window and levels (default: the packaged ``core/drift.toml``).
        window: rows in the window, overriding the thresholds file (tests).
    """

    def __init__(
        self, metrics: Metrics, *, thresholds: DriftThresholds | None = None, window: int | None = None
    ) -> None:
        self.metrics = metrics
        self.thresholds = thresholds or load_thresholds()
        self.window = window or self.thresholds.window
        self.monitor: DriftMonitor | None = None
        self._columns = {name: i for i, name in enumerate(FEATURE_NAMES)}
        self._threshold_gauge: Gauge = metrics.feature_drift_threshold

    def set_reference(self, reference: dict[str, dict[str, list[float]]] | None) -> None:
        self.metrics.feature_drift_psi.clear()
        self._threshold_gauge.clear()
        self.monitor = DriftMonitor(reference, self._columns, window=self.window) if reference else None
        if self.monitor is not None:
            for name in self.monitor.names:
                for severity, level in self.thresholds.levels(name).items():
                    self._threshold_gauge.labels(name, severity).set(level)

    def update(self, result: BatchResult) -> None:
        if self.monitor is not None and len(result.full):
            self.monitor.update(result.full)

    def export(self) -> None:
        if self.monitor is None:
            return
        for name, value in self.monitor.psi().items():
            self.metrics.feature_drift_psi.labels(name).set(value)

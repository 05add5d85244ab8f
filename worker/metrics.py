"""All spark-ml metrics in one module, built against an injected registry (a fresh one per test).

:class:`Metrics` is the worker's set, :class:`HttpMetrics` the HTTP gateway's (``spark-ml up`` builds
both on one registry). The six names of DESIGN.md are kept exactly (the customer's alerts and dashboards
use them); the rest are operator extras. Latency is in milliseconds with explicit buckets that include the
alert thresholds (80 ms and 200 ms), so ``histogram_quantile`` is exact at those points; each millisecond
histogram has a twin in seconds (``ml_predict_latency_seconds``, ``ml_http_request_duration_seconds``), the
base unit of Prometheus' naming guide, computed from the same observations at scrape time.

Every registry also carries, once, the standard process metrics (``process_resident_memory_bytes``,
``process_cpu_seconds_total``, open file descriptors ...), ``python_info``, the garbage collector's counts, and
``spark_ml_build_info{version,python,nats_py,feature_kernel}`` (value 1).
"""

from __future__ import annotations

import platform
import time
import weakref
from importlib import metadata

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from spark_ml.core.outcomes import Outcome, Status
from spark_ml.worker.histogram import BatchHistogram, HistogramChild, ScaledHistogram

__all__ = ["HTTP_LATENCY_BUCKETS_MS", "LATENCY_BUCKETS_MS", "SCORE_BUCKETS", "HttpMetrics", "Metrics", "Status"]

LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 80.0, 100.0, 200.0, 250.0, 500.0, 1000.0)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
ERROR_TYPES = ("invalid_input", "model_error", "model_output", "publish_error", "model_load", "shadow_error")
WIRE_ERROR_KINDS = ("subject", "reply", "headers", "handler")
"""The kinds of ``ml_wire_errors_total`` (see :func:`spark_ml.worker.natsio.fastparser.wire_error`)."""
"""Values of ``error_type`` in ml_model_errors_total (created at zero so rates exist before the first error)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
HTTP_LATENCY_BUCKETS_MS = (*LATENCY_BUCKETS_MS, 2500.0, 5000.0, 10000.0)
"""The worker's millisecond buckets, extended past the default request timeout so 504s land in a bucket."""


_EQUIPPED: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()
"""Registries that already carry the process collectors and the build info (``spark-ml up`` builds the worker's
and the gateway's containers on one registry: registering them twice would be refused as duplicates)."""


def build_info() -> dict[str, str]:
    """Labels of ``spark_ml_build_info``: versions of spark-ml, Python and nats-py, and the feature kernel."""
    from spark_ml.core.features import KERNEL

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "version": version("spark-ml"),
        "python": platform.python_version(),
        "nats_py": version("nats-py"),
        "feature_kernel": KERNEL,
    }


def _equip(registry: CollectorRegistry) -> None:
    if registry in _EQUIPPED:
        return
    _EQUIPPED.add(registry)
    if registry is not REGISTRY:  # prometheus_client's global registry has them from its import
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    Info("spark_ml_build", "spark-ml build (value 1)", registry=registry).info(build_info())


class _Container:
    """Collectors on one registry, rendered together in the Prometheus text format, with the process
    collectors and ``spark_ml_build_info`` (once per registry).

    Args:
        registry: where the collectors live; a new private registry when None.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        _equip(self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Metrics(_Container):
    """The metric set of one worker process.

    Args:
        registry: where the collectors live; a new private registry when None.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        # --- the six of DESIGN.md ---
        self.predict_requests = Counter(
            "ml_predict_requests", "Snapshots and predict requests handled", ["model_version", "status"], registry=r
        )
        self.predict_latency, self.predict_latency_seconds = _ms_and_seconds(
            "ml_predict_latency_ms",
            "ml_predict_latency_seconds",
            "Receive-to-publish latency",
            "model_version",
            LATENCY_BUCKETS_MS,
            r,
        )
        self.model_version_info = Gauge(
            "ml_model_version_info", "Active model version (value 1)", ["version"], registry=r
        )
        self.feature_extractions = Counter("ml_feature_extractions", "Feature vectors computed", registry=r)
        self.prediction_score = BatchHistogram(
            "ml_prediction_score", "Scores of published predictions", buckets=SCORE_BUCKETS, registry=r
        )
        self.model_errors = Counter("ml_model_errors", "Errors by type", ["error_type"], registry=r)
        # --- operator extras ---
        self.snapshots_received = Counter("ml_snapshots_received", "Snapshots received on the stream", registry=r)
        self.dead_letters = Counter("ml_dead_letters", "Messages dead-lettered, by reason", ["reason"], registry=r)
        self.batch_size = Histogram("ml_batch_size", "Snapshots per micro-batch", buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("ml_queue_depth", "Snapshots waiting in each shard", ["shard"], registry=r)
        self.slow_consumer_drops = Counter(
            "ml_slow_consumer_drops", "Messages the NATS client dropped as a slow consumer", registry=r
        )
        self.nats_reconnects = Counter("ml_nats_reconnects", "Reconnections to NATS", registry=r)
        self.wire_errors = Counter(
            "ml_wire_errors",
            "Messages the connection could not take as sent (subject, reply or header block not decodable, "
            "a handler that raised), by kind",
            ["kind"],
            registry=r,
        )
        # Labelled, so the series exists only while a shadow model is set (an unlabelled gauge would
        # export 0 without one, and the agreement alert would fire on every deployment).
        self.shadow_agreement = Gauge(
            "ml_shadow_agreement_ratio",
            "Share of equal signals between live and shadow over a window",
            ["shadow_version"],
            registry=r,
        )
        self.shadow_skipped = Counter(
            "ml_shadow_skipped", "Rows not shadow-scored because the shadow model was still busy", registry=r
        )
        self.feature_drift_psi = Gauge(
            "ml_feature_drift_psi",
            "Population stability index of a live feature vs the model's reference",
            ["feature"],
            registry=r,
        )
        self.feature_drift_threshold = Gauge(
            "ml_feature_drift_threshold",
            "PSI level of a feature at which drift is a warning or critical (core/drift.toml)",
            ["feature", "severity"],
            registry=r,
        )
        # --- symbol partitions (docs/SCALEOUT.md); all 0 on a worker that runs unpartitioned ---
        self.partitions_configured = Gauge(
            "ml_partitions_configured",
            "Units of the partitioned deployment (SPARK_ML_PARTITIONS + the bare-subject forwarder); 0 unpartitioned",
            registry=r,
        )
        self.partitions_owned = Gauge(
            "ml_partitions_owned",
            "Units this worker owns (core: lease held and subscribed; jetstream: assigned and pulled on)",
            registry=r,
        )
        self.ownership_changes = Counter(
            "ml_partition_ownership_changes", "Units this worker took over or gave up (lost included)", registry=r
        )
        self.checkpoint_age = Gauge(
            "ml_partition_checkpoint_age_seconds",
            "Seconds since the state of an owned unit was last covered by its checkpoint (what a takeover misses)",
            ["partition"],
            registry=r,
        )
        # --- live quality (core/ml/live_quality.py): labels from each symbol's next snapshot, per worker ---
        live = ["model_version", "role"]

        def last(name: str, figure: str, more: str = "") -> Gauge:
            return Gauge(name, f"{figure} of the last labelled predictions{more}", live, registry=r)

        self.live_auc = last("ml_live_auc", "AUC", " (a window per worker)")
        self.live_accuracy = last("ml_live_accuracy", "Accuracy (score >= 0.5)")
        self.live_log_loss = last("ml_live_log_loss", "Log loss")
        self.live_brier = last("ml_live_brier", "Brier score")
        self.live_window_rows = Gauge(
            "ml_live_window_rows", "Labelled predictions in the live-quality window now", live, registry=r
        )
        self.live_labelled = Counter(
            "ml_live_labelled_predictions", "Predictions labelled by their symbol's next snapshot", live, registry=r
        )
        self.offline_auc_lower = Gauge(
            "ml_model_offline_auc_lower",
            "Lower bound of the version's walk-forward 95% AUC interval (registry manifest)",
            ["model_version"],
            registry=r,
        )
        self._changes_seen = 0
        self._checkpointed: dict[int, float] = {}
        self._aged: set[int] = set()
        self._version: str | None = None
        self._per_version: dict[str, tuple[Counter, HistogramChild]] = {}
        for error_type in ERROR_TYPES:
            self.model_errors.labels(error_type)
        for kind in WIRE_ERROR_KINDS:
            self.wire_errors.labels(kind)

    def set_model_version(self, version: str) -> None:
        """Point ml_model_version_info at the new version (exactly one series has value 1)."""
        if version == self._version:
            return
        if self._version is not None:
            self.model_version_info.remove(self._version)
        self.model_version_info.labels(version).set(1)
        self._version = version
        # Zero series from the start, so ratios and rates in alerts and dashboards have data to work on.
        for status in Status:
            self.predict_requests.labels(version, status)
        self.predict_latency.labels(version)

    def for_version(self, version: str) -> tuple[Counter, HistogramChild]:
        """The ``ok`` request counter and the latency histogram of a version (label lookups cached)."""
        pair = self._per_version.get(version)
        if pair is None:
            pair = (self.predict_requests.labels(version, Status.OK), self.predict_latency.labels(version))
            if len(self._per_version) > 64:
                self._per_version.clear()
            self._per_version[version] = pair
        return pair

    def checkpointed(self, unit: int) -> None:
        """Unit ``unit``'s checkpoint covers its state now (written, or nothing new since the last one)."""
        self._checkpointed[unit] = time.monotonic()

    def export_partitions(self, *, units: int, held: frozenset[int], owned: frozenset[int], changes: int) -> None:
        """Set the partition metrics from the intake's view (before each scrape).

        Args:
            units: P + 1 (unit P is the forwarder of bare ``market.snapshot``).
            held: the units this worker owns for ``ml_partitions_owned``.
            owned: the units whose state this worker holds (a checkpoint age each, once checkpointed).
            changes: the intake's count of ownership changes since start (monotonic).
        """
        self.partitions_configured.set(units)
        self.partitions_owned.set(len(held))
        if changes > self._changes_seen:
            self.ownership_changes.inc(changes - self._changes_seen)
            self._changes_seen = changes
        now = time.monotonic()
        aged = {n for n in owned if n in self._checkpointed}
        for n in self._aged - aged:
            self.checkpoint_age.remove(_unit_label(n, units))
        for n in aged:
            self.checkpoint_age.labels(_unit_label(n, units)).set(now - self._checkpointed[n])
        self._aged = aged
        for n in set(self._checkpointed) - owned:
            del self._checkpointed[n]  # taken over again later, its age starts at its next checkpoint

    def refused(self, outcome: Outcome, model_version: str) -> None:
        """Count one refused input or request: its status in requests, its type in model errors."""
        self.predict_requests.labels(model_version, outcome.status).inc()
        self.model_errors.labels(outcome.error_type).inc()


def _ms_and_seconds(
    name: str,
    seconds_name: str,
    what: str,
    label: str,
    buckets: tuple[float, ...],
    registry: CollectorRegistry,
    *,
    when: str = "",
) -> tuple[BatchHistogram, ScaledHistogram]:
    """A latency histogram in milliseconds labelled by ``label``, and its twin in seconds from the same
    observations (the base unit of Prometheus' naming guide)."""
    ms = BatchHistogram(name, f"{what} in milliseconds{when}", buckets=buckets, labelnames=[label], registry=registry)
    seconds = ScaledHistogram(
        ms, seconds_name, f"{what} in seconds{when} ({name} in the base unit)", scale=1e-3, registry=registry
    )
    return ms, seconds


def _unit_label(n: int, units: int) -> str:
    return "fwd" if n == units - 1 else str(n)


class HttpMetrics(_Container):
    """The HTTP gateway's metrics: requests by route and status code, latency by route (milliseconds, and the
    same in seconds as ``ml_http_request_duration_seconds``).

    Args:
        registry: where the collectors live; a new private registry when None.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.requests = Counter(
            "ml_http_requests", "HTTP requests answered by the gateway", ["route", "code"], registry=r
        )
        self.latency, self.latency_seconds = _ms_and_seconds(
            "ml_http_latency_ms",
            "ml_http_request_duration_seconds",
            "HTTP request latency",
            "route",
            HTTP_LATENCY_BUCKETS_MS,
            r,
            when=", arrival to response",
        )

    def observe(self, route: str, code: int, latency_ms: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(route, str(code)).inc()
        self.latency.labels(route).observe(latency_ms)

"""The worker process: connect, consume, predict, publish, serve ``ml.predict`` and metrics; drain on a signal.

Shutdown order (STYLE.md): stop intake (drain the subscription so queued messages are processed, not
discarded), finish in-flight batches within ``drain_timeout_s``, stop the predict service, flush, close.
A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from spark_ml.core import features, subjects
from spark_ml.core.engine import Engine, SignalPolicy
from spark_ml.core.features import FeatureStore
from spark_ml.core.partition import units
from spark_ml.worker.cluster.owned import OwnedUnits
from spark_ml.worker.connect import connect, safe_url
from spark_ml.worker.intake import Intake, PartitionedCoreIntake, PartitionedJetStreamIntake, make_intake
from spark_ml.worker.lifecycle import Lifecycle, cancel_all
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsio.fastparser import reading
from spark_ml.worker.pipeline.live_quality import LiveQualityTracker
from spark_ml.worker.pipeline.models import ModelSource
from spark_ml.worker.pipeline.shadow import DriftTracker, ShadowScorer
from spark_ml.worker.pipeline.stream import StreamProcessor
from spark_ml.worker.settings import Settings
from spark_ml.worker.sidecar import MetricsServer
from spark_ml.worker.tracing_optional import tracing_for

if TYPE_CHECKING:  # the SDK is optional: imported only when tracing is on
    from spark_ml.worker.tracing import Tracing

__all__ = ["ServiceFactory", "Stoppable", "WorkerApp", "run_worker"]

log = logging.getLogger(__name__)

_WATCH_S = 0.5
"""How often the connection watch looks at the connection (it exits after two bad looks in a row)."""


class Stoppable(Protocol):
    async def stop(self) -> None: ...


ServiceFactory = Callable[["WorkerApp"], Awaitable[Stoppable]]


class WorkerApp(Lifecycle):
    """One worker process's runtime.

    Args:
        settings: process settings.
        registry: Prometheus registry (a fresh one when None; tests pass their own).
        handle_signals: install SIGTERM/SIGINT handlers (off for tests and embedding).
        services: factories of services that run beside the stream on the same connection and engine
            (the ``ml.predict`` micro service); each gets the started app and returns something with
            ``async stop()``. The composition root (``spark_ml.worker.run``, ``spark_ml.worker.up``) supplies them,
            so the worker never imports the gateway layer.
        serve_metrics: run the metrics sidecar on ``settings.metrics_port``.
        tracing: spans of the stream and of ``ml.predict``; None builds them from ``settings`` when
            ``SPARK_ML_TRACING=on`` (tests pass one with an in-memory exporter).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        handle_signals: bool = True,
        services: Sequence[ServiceFactory] = (),
        serve_metrics: bool = True,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing if tracing is not None else tracing_for(settings, "spark-ml-worker")
        self.metrics = Metrics(registry)
        self.handle_signals = handle_signals
        self.service_factories = list(services)
        self.serve_metrics = serve_metrics
        self.stop_event = asyncio.Event()
        self.models = ModelSource(settings)
        self.models.load_initial()
        self.engine = Engine(
            self.models.live,
            features=FeatureStore(max_symbols=settings.max_symbols),
            policy=SignalPolicy(settings.signal_margin),
        )
        self.nc: Client | None = None
        self.processor: StreamProcessor | None = None
        self.sidecar: MetricsServer | None = None
        self.intake: Intake | None = None
        self.owned = OwnedUnits()
        """The units this worker owns: the intake reports them, the ``ml.predict`` service follows."""
        self._services: list[Stoppable] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._consuming = False
        self._signals = 0
        self.exit_code = 0
        """Non-zero once the connection was lost for good: :func:`run_worker` exits with it."""
        self.on_hard_exit: list[Callable[[], None]] = []
        """Run before a second signal exits at once (say, to stop an embedded nats-server)."""
        self._started_at = 0.0
        self._load_errors_counted = 0

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._started_at = time.monotonic()
        self.metrics.set_model_version(self.engine.model.version)
        if self.serve_metrics:
            self.sidecar = MetricsServer(
                self.metrics,
                host=s.bind_host,
                port=s.metrics_port,
                ready=self.ready,
                before_scrape=self._refresh,
                alive=self.alive,
            )
            await self.sidecar.start()
        self.nc = await connect(s, name=f"spark-ml-worker-{os.getpid()}", metrics=self.metrics)
        self.live_quality = LiveQualityTracker(
            self.metrics,
            self.engine.features,
            window=s.live_quality_window,
            min_rows=s.live_quality_min_rows,
            export_s=s.live_quality_export_s,
            max_symbols=s.max_symbols,
        )
        on = s.live_quality
        told = self.live_quality.shadow_scored if on else None
        self.shadow = ShadowScorer(self.nc, self.metrics, self.engine.policy, on_scored=told)
        self.drift = DriftTracker(self.metrics)
        self.intake = make_intake(self.nc, s, self.metrics, features=self.engine.features, owned=self.owned)
        self.processor = StreamProcessor(
            self.engine,
            self.metrics,
            self.intake.output,
            settlement=self.intake.settlement,
            # Live quality first: it must hold a batch before the shadow scorer reports a skip of it.
            observers=[*([self.live_quality.observe] if on else []), self.shadow.submit, self.drift.update],
            shards=s.pool_size,
            queue_max=s.queue_max,
            batch_max=s.batch_max,
            batch_wait_s=s.batch_wait_ms / 1000.0,
            max_payload=s.max_payload,
            output_encoding=s.output_encoding,
            tracing=self.tracing,
        )
        self._models_changed()
        self._count_load_errors()
        self.processor.start()
        try:
            await self.intake.start(self.processor)
        except BaseException:  # a refusal (ClusterRefused) exits the process: close what was opened first
            await self.stop()
            raise
        await self.nc.subscribe(subjects.MODEL_QUALITY, cb=self.live_quality.on_request)
        for factory in self.service_factories:
            self._services.append(await factory(self))
        # Twice: nats-py 2.16 can write flush's PING ahead of SUBs still in its buffer, so one
        # round trip does not prove the server has our subscriptions.
        await self.nc.flush()
        await self.nc.flush()
        self._consuming = True
        self._tasks.append(asyncio.create_task(self._watch_models(), name="spark-ml-model-watch"))
        self._tasks.append(asyncio.create_task(self._watch_connection(), name="spark-ml-connection-watch"))
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        _freeze_heap()
        if features.KERNEL != "c":
            log.warning("features: C kernel not built (no compiler at install?), the Python one is ~2.5 us/msg slower")
        log.info(
            "worker ready: nats=%s mode=%s model=%s shards=%d features=%s metrics=%s",
            safe_url(self.nc.connected_url.geturl()) if self.nc.connected_url else "?",
            s.mode,
            self.engine.model.version,
            s.pool_size,
            features.KERNEL,
            f"http://{s.bind_host}:{self.sidecar.port}/metrics" if self.sidecar else "off",
        )

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second %s: exiting at once", signal.Signals(sig).name)
            for hook in self.on_hard_exit:
                with contextlib.suppress(Exception):
                    hook()
            os._exit(1)
        log.info("%s: stopping intake and draining", signal.Signals(sig).name)
        self.stop_event.set()

    def ready(self) -> bool:
        """Consuming: intake started, connected, and the connection's reader running."""
        return self._consuming and self.nc is not None and self.nc.is_connected and reading(self.nc)

    def alive(self) -> bool:
        """False once the worker cannot recover by itself: its connection closed for good, or its reader stopped
        while connected (it would wait minutes for stale-connection detection, predicting nothing)."""
        return self.exit_code == 0 and (self.nc is None or reading(self.nc))

    async def _watch_connection(self) -> None:
        """Exit (non-zero, through :func:`run_worker`) when the connection is closed for good or its reader stopped,
        so that the supervisor restarts the worker instead of keeping a healthy-looking process that reads nothing.

        Two checks in a row: a reconnect replaces the reader between two of them.
        """
        assert self.nc is not None
        nc = self.nc
        misses = 0
        while not self.stop_event.is_set():
            await asyncio.sleep(_WATCH_S)
            misses = 0 if reading(nc) else misses + 1
            if misses >= 2:
                why = f"closed ({type(nc.last_error).__name__}: {nc.last_error})" if nc.is_closed else "reader stopped"
                log.error("nats connection lost for good: %s; exiting so that the supervisor restarts the worker", why)
                self.exit_code = 1
                self.stop_event.set()
                return

    def _refresh(self) -> None:
        if self.processor is not None:
            self.drift.export()
            if self.settings.live_quality:
                self.live_quality.export()
            for i, depth in enumerate(self.processor.pool.depths()):
                self.metrics.queue_depth.labels(str(i)).set(depth)
        self._export_partitions()

    def _export_partitions(self) -> None:
        """The partition metrics, from the partitioned intake (MLPartitionWithoutOwner sums them over workers)."""
        intake = self.intake
        if isinstance(intake, PartitionedJetStreamIntake):
            # A unit's pin comes with its next message: a quiet unit has no pin, and still an owner pulling on it.
            held = intake.pulling
        elif isinstance(intake, PartitionedCoreIntake) and intake.mode == "partitioned":
            held = intake.owned
        else:
            return
        self.metrics.export_partitions(
            units=units(intake.partitions), held=held, owned=intake.owned, changes=intake.ownership_changes
        )

    async def _watch_models(self) -> None:
        """Switch to a newly promoted, rolled-back or shadowed version without a restart."""
        while True:
            await asyncio.sleep(self.settings.registry_poll_s)
            try:
                changed = await self.models.refresh()
            except Exception:
                log.exception("model refresh failed; keeping %s", self.engine.model.version)
                self.metrics.model_errors.labels("model_load").inc()
                continue
            self._count_load_errors()
            if changed:
                self._models_changed()

    def _count_load_errors(self) -> None:
        new = self.models.load_errors - self._load_errors_counted
        if new > 0:
            self.metrics.model_errors.labels("model_load").inc(new)
            self._load_errors_counted = self.models.load_errors

    def _models_changed(self) -> None:
        # Assigned between batches: run_batch is synchronous, so no batch mixes two versions.
        if self.engine.model is not self.models.live:
            self.engine.model = self.models.live
            self.drift.set_reference(self.models.reference)
            log.info("model switched to %s", self.engine.model.version)
            gc.freeze()  # the new model's objects are long-lived too (see _freeze_heap)
        elif self.drift.monitor is None and self.models.reference:
            self.drift.set_reference(self.models.reference)
        self.metrics.set_model_version(self.engine.model.version)
        if self.shadow.model is not self.models.shadow:
            self.shadow.model = self.models.shadow
            log.info("shadow model: %s", self.models.shadow.version if self.models.shadow else "none")
        shadow = self.shadow.model.version if self.shadow.model is not None else None
        self.live_quality.set_models(self.engine.model.version, shadow, self.models.offline_auc_lower)

    def model_info(self) -> dict[str, Any]:
        """What ``ml.model.info`` replies: the active model (:meth:`ModelSource.info`) and this worker's
        live quality of it and of the shadow."""
        return {**self.models.info(), "liveQuality": self.live_quality.info()}

    async def stop(self) -> None:
        """Stop intake, finish in-flight work within the drain bound, then drain the connection.

        Draining the connection (not stopping the services first) answers the ``ml.predict`` requests
        already queued in the client before the subscriptions go; ``Service.stop()`` would unsubscribe
        and drop them. Draining also flushes the last predictions and JetStream acks.
        """
        self._consuming = False
        # A stop that outlasts the drain bound is stuck somewhere: say where, while it still can.
        slow = asyncio.get_running_loop().call_later(self.settings.drain_timeout_s + 2, _log_tasks, "stop is slow")
        try:
            await self._stop()
        finally:
            slow.cancel()

    async def _stop(self) -> None:
        await cancel_all(self._tasks)
        nc = self.nc
        abandoned = 0
        if self.intake is not None and nc is not None and nc.is_connected:
            await self.intake.stop()
        if self.processor is not None:
            abandoned = await self.processor.close(self.settings.drain_timeout_s)
            await self.shadow.close()
        if nc is not None:
            if nc.is_connected:
                try:
                    await nc.drain()
                except Exception as exc:
                    log.warning("drain failed (%s); closing", exc)
            if not nc.is_closed:
                await nc.close()
        for service in reversed(self._services):
            with contextlib.suppress(Exception):
                await service.stop()
        if self.sidecar is not None:
            await self.sidecar.stop()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # flushes the exporter: network I/O
        p = self.processor
        log.info(
            "worker stopped: published=%d dead_lettered=%d abandoned=%d uptime=%.1fs",
            p.published if p else 0,
            p.dead_lettered if p else 0,
            abandoned,
            time.monotonic() - self._started_at,
        )


def _log_tasks(why: str) -> None:
    """Log every task's stack (where each one awaits)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=out)
    log.warning("%s; the tasks and where they wait:\n%s", why, out.getvalue())


async def run_worker(
    settings: Settings, *, services: Sequence[ServiceFactory] = (), handle_signals: bool = True
) -> None:
    """``spark-ml worker``: run until SIGTERM/SIGINT, then drain and return."""
    async with WorkerApp(settings, services=services, handle_signals=handle_signals) as app:
        await app.stop_event.wait()
    if app.exit_code:
        raise SystemExit(app.exit_code)


def _freeze_heap() -> None:
    """Collect once, then move every object alive after start-up out of the collector's reach.

    Modules, the model and its libraries are ~80k objects that live as long as the process; a full
    collection walks all of them and took 34 ms here (the p99.9 of a LightGBM worker at 10k/s was 30-40 ms
    of such pauses). Frozen, a full collection only walks what was allocated since (``gc.freeze``).
    """
    gc.collect()
    gc.freeze()

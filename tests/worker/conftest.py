"""Fixtures for worker tests: an in-process WorkerApp on the test's event loop, a collector, and a stream
processor fed by the in-memory intake (no server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from nats.aio.client import Client

from spark_ml.core.engine import Engine
from spark_ml.core.models import BaselineModel
from spark_ml.worker.app import WorkerApp
from spark_ml.worker.intake import MemoryIntake, MemoryOutput
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.pipeline.stream import StreamProcessor
from spark_ml.worker.run import predict_service
from spark_ml.worker.services.analytics import AnalyticsService
from spark_ml.worker.settings import Settings
from tests.support.lifecycle import started
from tests.support.messages import Collector


@pytest.fixture
def settings_factory(nats_url: str, tmp_path) -> Callable[..., Settings]:
    """``make(**overrides)``: Settings on the test's server, free ports, a registry in the test's directory."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "nats_url": nats_url,
            "metrics_port": 0,
            "http_port": 0,
            "registry": tmp_path / "registry",
            "registry_poll_s": 0.1,
        }
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
async def worker_factory(settings_factory) -> AsyncIterator[Callable[..., Awaitable[WorkerApp]]]:
    """``start(**settings)``: a started in-process WorkerApp (``serve_predict=True`` adds ``ml.predict``)."""
    async with started() as group:

        async def start(**overrides: Any) -> WorkerApp:
            services = [predict_service] if overrides.pop("serve_predict", False) else []
            return await group.start(WorkerApp(settings_factory(**overrides), handle_signals=False, services=services))

        yield start


@pytest.fixture
async def analytics_service(nc: Client) -> AsyncIterator[Callable[..., Awaitable[AnalyticsService]]]:
    """``start(**kwargs)``: a started :class:`AnalyticsService` on the test's connection, stopped at teardown."""
    async with started() as group:

        async def start(**kwargs: Any) -> AnalyticsService:
            return await group.start(AnalyticsService(nc, **kwargs))

        yield start


@pytest.fixture
def collect(nc: Client) -> Callable[[str], Awaitable[Collector]]:
    """``await collect(subject)``: a :class:`Collector` subscribed on ``nc`` (the server knows the SUB)."""

    async def sub(subject: str) -> Collector:
        c = Collector()
        await nc.subscribe(subject, cb=c.cb)
        await nc.flush()
        await nc.flush()  # nats-py 2.16: one flush can overtake a SUB still in the client's buffer
        return c

    return sub


@dataclass
class MemoryPipeline:
    """A real stream processor (baseline model) fed by the in-memory intake."""

    intake: MemoryIntake
    processor: StreamProcessor
    metrics: Metrics

    @property
    def output(self) -> MemoryOutput:
        return self.intake.output


@pytest.fixture
async def memory_pipeline() -> AsyncIterator[Callable[..., Awaitable[MemoryPipeline]]]:
    """``await memory_pipeline(at_least_once=False, **pool)``: a started processor and its intake, closed after."""
    made: list[MemoryPipeline] = []

    async def make(*, at_least_once: bool = False, **pool: Any) -> MemoryPipeline:
        intake = MemoryIntake(at_least_once=at_least_once)
        metrics = Metrics()
        processor = StreamProcessor(
            Engine(BaselineModel()), metrics, intake.output, settlement=intake.settlement, **pool
        )
        processor.start()
        await intake.start(processor)
        made.append(MemoryPipeline(intake, processor, metrics))
        return made[-1]

    yield make
    for p in made:
        await p.intake.stop()
        await p.processor.close(5)

"""The ``ml.predict`` service for tests: stand-in models, a model resolver, and a started service factory.

Used by the service's own tests (tests/worker) and by the HTTP bridge's (tests/gateway), which needs a
service answering behind it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from nats.aio.client import Client
from numpy.typing import NDArray

from spark_ml.core.engine import Engine
from spark_ml.core.errors import RegistryError
from spark_ml.core.models.base import Model
from spark_ml.core.models.baseline import BaselineModel
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.services.predict import PredictService
from tests.support.messages import SEED

SEED_SNAPSHOT: dict[str, Any] = SEED
"""The seeds' example snapshot, exactly."""
SEED_BODY = b'{"snapshot":{"ts":1696723200000,"mid":45000,"spreadBp":2,"vol1m":1000000,"rsi14":55}}'
"""The body of the seeds' curl example, byte for byte."""


class ConstantModel:
    """Scores every row the same; a stand-in for a second registry version."""

    kind = "constant"
    feature_names: tuple[str, ...] = BaselineModel.feature_names

    def __init__(self, version: str = "v2", value: float = 0.75) -> None:
        self.version = version
        self.value = value

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.full(x.shape[0], self.value)


class BrokenModel(ConstantModel):
    """A model whose scoring raises: every request must get a 500 reply."""

    kind = "broken"

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        raise RuntimeError("weights went missing")


class SlowModel(ConstantModel):
    """Takes 2 ms a call, blocking the loop as a heavy model would."""

    kind = "slow"

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        time.sleep(0.002)
        return super().predict_proba(x)


def model_info(engine: Engine) -> dict[str, Any]:
    m = engine.model
    return {"version": m.version, "kind": m.kind, "featureNames": list(m.feature_names), "created": None}


def resolver(*models: Model) -> Any:
    by_version = {m.version: m for m in models}

    def resolve(version: str) -> Model:
        try:
            return by_version[version]
        except KeyError:
            raise RegistryError(f"no model version {version!r} in the registry") from None

    return resolve


async def start_service(
    nc: Client, model: Model | None = None, *, metrics: Metrics | None = None, max_payload: int = 64 * 1024
) -> tuple[PredictService, Engine, Metrics]:
    """A PredictService over a fresh engine (baseline unless told) and a fresh metric set."""
    engine = Engine(model or BaselineModel())
    metrics = metrics or Metrics()
    service = await PredictService.start(
        nc,
        engine=engine,
        metrics=metrics,
        resolve_model=resolver(ConstantModel("v2")),
        model_info=lambda: model_info(engine),
        max_payload=max_payload,
    )
    return service, engine, metrics

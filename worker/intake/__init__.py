"""Where snapshots come from: core NATS, a JetStream durable consumer, or memory (tests).

Each intake supplies the stream processor's settlement and output, then feeds it from ``start(processor)``
(see :mod:`spark_ml.worker.intake.base`). :func:`make_intake` picks one from the settings.
"""

from __future__ import annotations

from nats.aio.client import Client

from spark_ml.core.features import FeatureStore
from spark_ml.worker.intake.base import AtMostOnce, Delivery, Intake, Output, Processor, Settlement
from spark_ml.worker.intake.core import CoreIntake
from spark_ml.worker.intake.jetstream import JetStreamIntake
from spark_ml.worker.intake.memory import MemoryIntake, MemoryMsg, MemoryOutput, Sent
from spark_ml.worker.intake.partitioned_core import PartitionedCoreIntake
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.settings import Settings

__all__ = [
    "AtMostOnce",
    "CoreIntake",
    "Delivery",
    "Intake",
    "JetStreamIntake",
    "MemoryIntake",
    "MemoryMsg",
    "MemoryOutput",
    "Output",
    "PartitionedCoreIntake",
    "Processor",
    "Sent",
    "Settlement",
    "make_intake",
]


def make_intake(nc: Client, settings: Settings, metrics: Metrics, *, features: FeatureStore | None = None) -> Intake:
    """The intake of ``settings.mode`` on ``nc``, not started.

    With the engine's ``features``, core mode is partitioned (one owner per symbol partition, state handed over
    through KV: :class:`PartitionedCoreIntake`); without, it is the plain queue group (:class:`CoreIntake`).
    """
    if settings.mode == "jetstream":
        # Hook for the partitioned JetStream intake (worker/intake/partitioned_js.py): choose it here.
        return JetStreamIntake(nc, settings, metrics)
    if features is not None:
        return PartitionedCoreIntake(nc, settings, metrics, features=features)
    return CoreIntake(nc)

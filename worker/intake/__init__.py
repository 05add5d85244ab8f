"""Where snapshots come from: core NATS, a JetStream durable consumer, or memory (tests).

Each intake supplies the stream processor's settlement and output, then feeds it from ``start(processor)``
(see :mod:`spark_ml.worker.intake.base`). :func:`make_intake` picks one from the settings.
"""

from __future__ import annotations

from nats.aio.client import Client

from spark_ml.core.features import FeatureStore
from spark_ml.worker.cluster.owned import OwnedUnits
from spark_ml.worker.intake.base import AtMostOnce, Delivery, Intake, Output, Processor, Settlement
from spark_ml.worker.intake.core import CoreIntake
from spark_ml.worker.intake.jetstream import JetStreamIntake
from spark_ml.worker.intake.memory import MemoryIntake, MemoryMsg, MemoryOutput, Sent
from spark_ml.worker.intake.partitioned_core import PartitionedCoreIntake
from spark_ml.worker.intake.partitioned_js import PartitionedJetStreamIntake
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
    "PartitionedJetStreamIntake",
    "Processor",
    "Sent",
    "Settlement",
    "make_intake",
]


def make_intake(
    nc: Client,
    settings: Settings,
    metrics: Metrics,
    *,
    features: FeatureStore | None = None,
    owned: OwnedUnits | None = None,
) -> Intake:
    """The intake of ``settings.mode`` on ``nc``, not started.

    With the engine's ``features``, both modes are partitioned (one owner per symbol partition, state handed over
    through KV: :class:`PartitionedCoreIntake`, :class:`PartitionedJetStreamIntake`; docs/SCALEOUT.md). Without
    them, or in jetstream mode with ``settings.solo`` (this worker promises to be the only one), the intake is
    the unpartitioned one: the plain queue group (:class:`CoreIntake`) or the shared durable
    (:class:`JetStreamIntake`), both right for one worker only. Core mode decides about solo itself, at start
    (it probes the server's mapping and JetStream).

    ``owned`` hears which units the intake owns (the ``ml.predict`` service follows it): a partitioned intake
    reports as it takes and gives up units, an unpartitioned one owns every unit from the start.
    """
    if settings.mode == "jetstream":
        if features is not None and not settings.solo:
            return PartitionedJetStreamIntake(nc, settings, metrics, features=features, owned=owned)
        intake: Intake = JetStreamIntake(nc, settings, metrics)
    elif features is not None:
        return PartitionedCoreIntake(nc, settings, metrics, features=features, owned=owned)
    else:
        intake = CoreIntake(nc)
    if owned is not None:
        owned.set_everything(settings.partitions)
    return intake

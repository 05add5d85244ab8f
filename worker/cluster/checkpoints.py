"""Per-unit checkpoints of the feature state in KV bucket ``spark-ml-state`` (key ``p.<unit>``).

Every write names the revision its writer last read or wrote: a writer whose revision is stale (another
worker took the unit over and wrote since) gets :class:`~spark_ml.core.errors.OwnershipLost` and must stop
working on the unit. The payload is opaque here (bytes in, bytes out); its layout belongs to
:mod:`spark_ml.core.features.checkpoint`.
"""

from __future__ import annotations

from nats.aio.client import Client

__all__ = ["STATE_BUCKET", "CheckpointStore", "state_key"]

STATE_BUCKET = "spark-ml-state"


def state_key(unit: int) -> str:
    """The key of ``unit``'s checkpoint."""
    return f"p.{unit}"


class CheckpointStore:
    """Reads and compare-and-set writes of per-unit checkpoints.

    Args:
        nc: a connection to a server with JetStream.
        bucket: the KV bucket (created when missing).
        replicas: the bucket's replicas when this store creates it.
    """

    def __init__(self, nc: Client, *, bucket: str = STATE_BUCKET, replicas: int = 1) -> None:
        self.nc = nc
        self.bucket = bucket
        self.replicas = replicas

    async def open(self) -> None:
        """Bind to the bucket, creating it when missing; raises TransportError without JetStream."""
        raise NotImplementedError

    async def load(self, unit: int) -> tuple[bytes, int] | None:
        """``(checkpoint, revision)`` of ``unit``, or None when it has none (never written, or deleted).

        Pass the revision to the next :meth:`save`.
        """
        raise NotImplementedError

    async def revision(self, unit: int) -> int:
        """The current revision of ``unit``'s key (0 when it has none): what a new owner saves against."""
        raise NotImplementedError

    async def save(self, unit: int, data: bytes, *, revision: int) -> int:
        """Write ``data`` as ``unit``'s checkpoint if its revision is still ``revision``; the new revision.

        ``revision`` 0 means "no checkpoint yet". Raises :class:`~spark_ml.core.errors.OwnershipLost` when
        someone else wrote since.
        """
        raise NotImplementedError

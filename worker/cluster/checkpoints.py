"""Per-unit checkpoints of the feature state in KV bucket ``spark-ml-state`` (key ``p.<unit>``).

Every write names the revision its writer last read or wrote: a writer whose revision is stale (another
worker took the unit over and wrote since) gets :class:`~spark_ml.core.errors.OwnershipLost` and must stop
working on the unit. The payload is opaque here (bytes in, bytes out); its layout belongs to
:mod:`spark_ml.core.features.checkpoint`.
"""

from __future__ import annotations

import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from spark_ml.core.errors import OwnershipLost
from spark_ml.worker.cluster._kv import create_key, open_bucket

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
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        """Bind to the bucket, creating it when missing; raises ClusterRefused without JetStream."""
        if self._kv is None:
            self._kv = await open_bucket(self.nc, self.bucket, replicas=self.replicas)

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            await self.open()
        assert self._kv is not None
        return self._kv

    async def load(self, unit: int) -> tuple[bytes, int] | None:
        """``(checkpoint, revision)`` of ``unit``, or None when it has none (never written, or deleted).

        Pass the revision to the next :meth:`save`.
        """
        kv = await self._bucket()
        try:
            entry = await kv.get(state_key(unit))
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return entry.value, entry.revision or 0

    async def revision(self, unit: int) -> int:
        """The current revision of ``unit``'s key (0 when it has none): what a new owner saves against.

        A deleted key still has a revision (its delete marker's): saving against it is what claims it.
        """
        kv = await self._bucket()
        try:
            entry = await kv.get(state_key(unit))
        except nats.js.errors.KeyNotFoundError as exc:
            return exc.entry.revision or 0 if exc.entry is not None else 0
        return entry.revision or 0

    async def claim(self, unit: int) -> tuple[bytes | None, int]:
        """Take ``unit``'s checkpoint over: ``(checkpoint or None, revision)``, the revision bumped by a rewrite.

        The rewrite (same bytes, or an empty value when there was none) makes the previous owner's next
        :meth:`save` fail, even if it still believes it owns the unit: from here on only this caller's
        revision is current.
        """
        current = await self.load(unit)
        data, revision = current if current is not None else (None, await self.revision(unit))
        return data, await self.save(unit, data or b"", revision=revision)

    async def save(self, unit: int, data: bytes, *, revision: int) -> int:
        """Write ``data`` as ``unit``'s checkpoint if its revision is still ``revision``; the new revision.

        ``revision`` 0 means "no checkpoint yet". Raises :class:`~spark_ml.core.errors.OwnershipLost` when
        someone else wrote since.
        """
        kv = await self._bucket()
        key = state_key(unit)
        try:
            if revision == 0:
                return (await create_key(self.nc, self.bucket, kv, key, data))[0]
            return await kv.update(key, data, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise OwnershipLost(unit, f"checkpoint revision {revision} is stale") from exc

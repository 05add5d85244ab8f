"""Cluster membership, per-unit leases and per-unit checkpoints, all in JetStream KV buckets of the same NATS.

A *unit* is a partition ``0..P-1`` or the forwarder ``P`` (see :mod:`spark_ml.core.partition`).

- :class:`Membership`: the live workers (bucket ``spark-ml-members``, per-bucket TTL) and the units the
  shared assignment gives this worker.
- :class:`LeaseKeeper`: core mode's per-unit ownership (bucket ``spark-ml-leases``): acquire, renew, release,
  and a self-fence when renewals stop getting through.
- :class:`CheckpointStore`: a unit's feature state (bucket ``spark-ml-state``), written with the revision it
  read so that a stale owner's write fails with :class:`~spark_ml.core.errors.OwnershipLost`.
"""

from __future__ import annotations

from spark_ml.worker.cluster.checkpoints import STATE_BUCKET, CheckpointStore
from spark_ml.worker.cluster.membership import MEMBERS_BUCKET, Membership

__all__ = ["MEMBERS_BUCKET", "STATE_BUCKET", "CheckpointStore", "Membership"]

"""Live workers in KV bucket ``spark-ml-members``, and the units the shared assignment gives this worker.

Each worker puts ``m.<worker_id>`` every TTL/3; the bucket's TTL removes a dead worker's key (watchers see a
PURGE marker), a graceful stop deletes it at once. Every worker computes the same assignment from the same
sorted set (:func:`spark_ml.core.partition.assign`), so no coordinator is needed. A watch on ``m.>`` sees
changes as they happen; a periodic ``keys()`` resync covers a watcher that missed one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.client import Client

from spark_ml.worker.lifecycle import Lifecycle

__all__ = ["MEMBERS_BUCKET", "Membership", "OnChange", "member_key"]

MEMBERS_BUCKET = "spark-ml-members"

OnChange = Callable[[frozenset[int]], Awaitable[None]]
"""Called with this worker's new set of units whenever it changes."""


def member_key(worker_id: str) -> str:
    """The key of ``worker_id`` in the members bucket."""
    return f"m.{worker_id}"


class Membership(Lifecycle):
    """This worker's presence in the members bucket, the live member set, and this worker's units.

    Args:
        nc: a connection to a server with JetStream.
        worker_id: this worker's id (a KV key token: letters, digits, ``-``, ``_``).
        units: how many units to assign (P partitions + the forwarder: ``partition.units(P)``).
        ttl_s: the bucket's TTL: a worker that stopped putting its key leaves the set after this long.
        on_change: awaited with the new set of this worker's units whenever it changes (after ``debounce_s``
            of quiet, so that a join seen as several events does not flap); a failing callback is logged.
        debounce_s: how long the member set must stay unchanged before ``on_change`` runs.
        resync_s: how often the key list is re-read besides the watch (default: TTL/2).
        bucket: the KV bucket (created when missing, with ``ttl_s`` as its TTL).
        replicas: the bucket's replicas when this worker creates it.
    """

    def __init__(
        self,
        nc: Client,
        *,
        worker_id: str,
        units: int,
        ttl_s: float,
        on_change: OnChange | None = None,
        debounce_s: float = 0.2,
        resync_s: float | None = None,
        bucket: str = MEMBERS_BUCKET,
        replicas: int = 1,
    ) -> None:
        self.nc = nc
        self.worker_id = worker_id
        self.units = units
        self.ttl_s = ttl_s
        self.on_change = on_change
        self.debounce_s = debounce_s
        self.resync_s = resync_s if resync_s is not None else ttl_s / 2
        self.bucket = bucket
        self.replicas = replicas

    @property
    def members(self) -> frozenset[str]:
        """The live members as last seen (this worker included once started)."""
        raise NotImplementedError

    @property
    def assigned(self) -> frozenset[int]:
        """The units the assignment over :attr:`members` gives this worker."""
        raise NotImplementedError

    def owner_of(self, unit: int) -> str | None:
        """The member ``unit`` is assigned to, by the current member set (None when there is none)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Create/bind the bucket, put this worker's key, start the heartbeat, watch and resync tasks.

        Returns once the current member set is known and ``on_change`` ran once with the first assignment.
        """
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop the tasks and delete this worker's key, so that its units move at once."""
        raise NotImplementedError

    async def leave(self) -> None:
        """Stop heartbeats and delete the key, without stopping the watch (graceful hand-over first)."""
        raise NotImplementedError

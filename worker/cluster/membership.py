"""Live workers in KV bucket ``spark-ml-members``, and the units the shared assignment gives this worker.

Each worker puts ``m.<worker_id>`` every TTL/3; the bucket's TTL removes a dead worker's key (watchers see a
PURGE marker), a graceful stop deletes it at once. Every worker computes the same assignment from the same
sorted set (:func:`spark_ml.core.partition.assign`), so no coordinator is needed. A watch on ``m.>`` sees
changes as they happen; a periodic ``keys()`` resync covers a watcher that missed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from spark_ml.core.partition import assign, owner_map
from spark_ml.worker.cluster._kv import open_bucket
from spark_ml.worker.lifecycle import Lifecycle, cancel_all

__all__ = ["MEMBERS_BUCKET", "Membership", "OnChange", "member_key"]

MEMBERS_BUCKET = "spark-ml-members"

log = logging.getLogger(__name__)

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
        self._kv: KeyValue | None = None
        self._members: frozenset[str] = frozenset()
        self._notified: frozenset[int] | None = None
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._beating = False
        self._events = 0
        self.changes = 0
        """How many times the assignment of this worker changed (the first one included)."""

    @property
    def members(self) -> frozenset[str]:
        """The live members as last seen (this worker included once started)."""
        return self._members

    @property
    def assigned(self) -> frozenset[int]:
        """The units the assignment over :attr:`members` gives this worker."""
        return frozenset(assign(self._members, self.units).get(self.worker_id, ()))

    def owner_of(self, unit: int) -> str | None:
        """The member ``unit`` is assigned to, by the current member set (None when there is none)."""
        return owner_map(assign(self._members, self.units)).get(unit)

    async def start(self) -> None:
        """Create/bind the bucket, put this worker's key, start the heartbeat, watch and resync tasks.

        Returns once the current member set is known and ``on_change`` ran once with the first assignment.
        """
        self._kv = await open_bucket(self.nc, self.bucket, ttl_s=self.ttl_s, replicas=self.replicas)
        await self._kv.put(member_key(self.worker_id), b"")
        self._beating = True
        watcher = await self._kv.watch("m.>")
        await self._resync()
        await self._notify()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="spark-ml-member-heartbeat"),
            asyncio.create_task(self._watch(watcher), name="spark-ml-member-watch"),
            asyncio.create_task(self._resync_loop(), name="spark-ml-member-resync"),
            asyncio.create_task(self._notifier(), name="spark-ml-member-notify"),
        ]

    async def stop(self) -> None:
        """Delete this worker's key, so that its units move at once, and stop the tasks."""
        await self.leave()
        await cancel_all(self._tasks)
        self._tasks.clear()

    async def leave(self) -> None:
        """Stop heartbeats and delete the key, without stopping the watch (graceful hand-over first)."""
        if not self._beating or self._kv is None:
            return
        self._beating = False
        with contextlib.suppress(Exception):
            await self._kv.delete(member_key(self.worker_id))

    # ---- internals ------------------------------------------------------------------------------

    def _set_members(self, members: frozenset[str]) -> None:
        if members != self._members:
            log.info("members: %s", ", ".join(sorted(members)) or "none")
            self._members = members
            self._dirty.set()

    async def _resync(self) -> None:
        assert self._kv is not None
        events = self._events
        try:
            keys = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            keys = []
        if self._events != events:
            return  # the watch saw a change while the keys were listed: the listing may predate it
        members = {k[2:] for k in keys if k.startswith("m.")}
        if self._beating:
            # A listing that raced our own put may miss it; this worker is alive by definition.
            members.add(self.worker_id)
        self._set_members(frozenset(members))

    async def _heartbeat(self) -> None:
        assert self._kv is not None
        while self._beating:
            await asyncio.sleep(self.ttl_s / 3)
            if not self._beating:
                return
            try:
                await self._kv.put(member_key(self.worker_id), b"")
            except Exception as exc:
                log.warning("member heartbeat failed: %r", exc)

    async def _watch(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None or not entry.key.startswith("m."):
                    continue
                member = entry.key[2:]
                self._events += 1
                if entry.operation in (KV_DEL, KV_PURGE):
                    if member == self.worker_id and self._beating:
                        # This worker stalled past the TTL: the others dropped it; the next beat re-adds it.
                        log.warning("this worker's member key expired; it rejoins at the next heartbeat")
                    self._set_members(self._members - {member})
                else:
                    self._set_members(self._members | {member})
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync_s)
            try:
                await self._resync()
            except Exception as exc:
                log.warning("member resync failed: %r", exc)

    async def _notifier(self) -> None:
        while True:
            await self._dirty.wait()
            # Wait for a quiet spell: a join (or a restart) can arrive as several events in a row.
            while self._dirty.is_set():
                self._dirty.clear()
                await asyncio.sleep(self.debounce_s)
            await self._notify()

    async def _notify(self) -> None:
        assigned = self.assigned
        if assigned == self._notified:
            return
        self._notified = assigned
        self.changes += 1
        if self.on_change is None:
            return
        try:
            await self.on_change(assigned)
        except Exception:
            log.exception("membership on_change failed")

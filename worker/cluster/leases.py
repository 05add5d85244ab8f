"""Core mode's per-unit ownership: leases in KV bucket ``spark-ml-leases`` (key ``p.<unit>``, or ``solo``).

Acquire is a KV *create* (refused while anyone holds the key), renew an *update* naming the revision this
holder wrote last (refused once anyone else wrote), release a *delete* with that revision. The bucket's TTL
frees the lease of a holder that stopped renewing.

Self-fencing: the server measures the TTL from when it *received* the last renewal, which is after this
process *sent* it. So a holder that counts from the send time and gives up ``margin`` before the TTL
(:attr:`LeaseKeeper.margin_s`) always stops before the server lets anyone else create the key: a process that
stalled, or whose renewals no longer get through, loses the lease here first (``on_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from spark_ml.worker.cluster._kv import Prior, create_key, open_bucket
from spark_ml.worker.lifecycle import Lifecycle, cancel_all

__all__ = ["LEASES_BUCKET", "SOLO", "LeaseKeeper", "OnLost", "Prior", "unit_lease"]

log = logging.getLogger(__name__)

LEASES_BUCKET = "spark-ml-leases"
SOLO = "solo"
"""The lease of the only worker allowed against a server without the partition mapping."""

OnLost = Callable[[str], Awaitable[None]]
"""Called with a lease's key when this holder lost it (renewal refused, or not confirmed in time)."""


def unit_lease(unit: int) -> str:
    """The lease key of ``unit``."""
    return f"p.{unit}"


@dataclass
class _Lease:
    revision: int
    confirmed_sent: float
    """When the last write the server confirmed was sent (monotonic): the fence counts from it."""


class LeaseKeeper(Lifecycle):
    """The leases this worker holds: acquire, renew every TTL/3, release, and fence itself.

    Args:
        nc: a connection to a server with JetStream.
        holder: this worker's id (stored as the lease's value).
        ttl_s: the bucket's TTL (used when this keeper creates the bucket).
        on_lost: awaited with the key of a lease this holder lost; a failing callback is logged.
        on_freed: called (synchronously) with the key of any lease released or expired, by anyone.
        margin_s: how long before the TTL (from the last confirmed renewal's send) a lease counts as lost;
            default TTL/6.
        bucket: the KV bucket.
        replicas: the bucket's replicas when this keeper creates it.
    """

    def __init__(
        self,
        nc: Client,
        *,
        holder: str,
        ttl_s: float,
        on_lost: OnLost | None = None,
        on_freed: Callable[[str], None] | None = None,
        margin_s: float | None = None,
        bucket: str = LEASES_BUCKET,
        replicas: int = 1,
    ) -> None:
        self.nc = nc
        self.holder = holder
        self.ttl_s = ttl_s
        self.on_lost = on_lost
        self.on_freed = on_freed
        self.margin_s = margin_s if margin_s is not None else ttl_s / 6
        self.bucket = bucket
        self.replicas = replicas
        self._kv: KeyValue | None = None
        self._leases: dict[str, _Lease] = {}
        self._freed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.lost = 0
        """How many leases this holder lost (not released)."""
        self.prior: dict[str, Prior] = {}
        """Per lease acquired, what the key held before: ``released`` means its previous holder let go after
        its last checkpoint (the checkpoint is current); ``expired`` or ``none`` mean it may be stale."""

    @property
    def held(self) -> frozenset[str]:
        """The keys of the leases held (and not past their fence)."""
        return frozenset(k for k in self._leases if self.holds(k))

    def holds(self, key: str) -> bool:
        """Whether this holder holds ``key`` and its last confirmed renewal is recent enough."""
        lease = self._leases.get(key)
        return lease is not None and time.monotonic() < self._deadline(lease)

    def _deadline(self, lease: _Lease) -> float:
        return lease.confirmed_sent + self.ttl_s - self.margin_s

    async def start(self) -> None:
        """Bind (or create) the bucket; start renewing, fencing and watching for freed leases."""
        self._kv = await open_bucket(self.nc, self.bucket, ttl_s=self.ttl_s, replicas=self.replicas)
        watcher = await self._kv.watch(">")
        self._tasks = [
            asyncio.create_task(self._renew_loop(), name="spark-ml-lease-renew"),
            asyncio.create_task(self._fence_loop(), name="spark-ml-lease-fence"),
            asyncio.create_task(self._watch(watcher), name="spark-ml-lease-watch"),
        ]

    async def stop(self) -> None:
        """Stop renewing and release every lease still held."""
        await cancel_all(self._tasks)
        self._tasks.clear()
        for key in list(self._leases):
            await self.release(key)

    async def acquire(self, key: str) -> bool:
        """Take ``key`` if nobody holds it; whether this holder holds it now."""
        if self.holds(key):
            return True
        assert self._kv is not None, "start() first"
        sent = time.monotonic()
        try:
            revision, prior = await create_key(self.nc, self.bucket, self._kv, key, self.holder.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        self._leases[key] = _Lease(revision, sent)
        self.prior[key] = prior
        return True

    async def release(self, key: str) -> None:
        """Give ``key`` up (a delete naming this holder's revision, so it cannot delete a successor's)."""
        lease = self._leases.pop(key, None)
        if lease is None or self._kv is None:
            return
        try:
            await self._kv.delete(key, last=lease.revision)
        except Exception as exc:  # someone else holds it already, or the server is away: the TTL frees it
            log.info("lease %s: release not confirmed (%r)", key, exc)

    async def holder_of(self, key: str) -> str | None:
        """Who holds ``key`` according to the server (None when nobody)."""
        assert self._kv is not None, "start() first"
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def wait_freed(self, timeout: float) -> bool:
        """Wait until some lease is released or expires (True), or ``timeout`` seconds pass (False)."""
        self._freed.clear()
        # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result when the event is set in the
        # same step as a cancel, and swallows the cancel (a stopping analytics standby then never stopped).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._freed.wait()
            return True
        return False

    # ---- internals ------------------------------------------------------------------------------

    async def _lose(self, key: str, why: str) -> None:
        if self._leases.pop(key, None) is None:
            return
        self.lost += 1
        log.warning("lease %s lost: %s", key, why)
        if self.on_lost is not None:
            try:
                await self.on_lost(key)
            except Exception:
                log.exception("lease on_lost failed")

    async def _renew(self, key: str, lease: _Lease) -> None:
        assert self._kv is not None
        sent = time.monotonic()
        try:
            revision = await self._kv.update(key, self.holder.encode(), last=lease.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            await self._lose(key, "another holder wrote it (renewal refused)")
            return
        except Exception as exc:
            log.warning("lease %s: renewal failed (%r); fenced at TTL - margin", key, exc)
            return
        if self._leases.get(key) is lease:
            lease.revision, lease.confirmed_sent = revision, sent

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            leases = list(self._leases.items())
            if leases:
                await asyncio.gather(*(self._renew(k, lease) for k, lease in leases))

    async def _fence_loop(self) -> None:
        tick = min(0.1, self.margin_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for key, lease in list(self._leases.items()):
                if now >= self._deadline(lease):
                    await self._lose(key, "no renewal confirmed within TTL - margin")

    async def _watch(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is not None and entry.operation in (KV_DEL, KV_PURGE):
                    self._freed.set()
                    if self.on_freed is not None:
                        try:
                            self.on_freed(entry.key)
                        except Exception:
                            log.exception("lease on_freed failed")
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

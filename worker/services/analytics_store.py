"""Where the live analytics keep their state and decide who is active: two JetStream KV buckets of the same NATS.

* ``spark-ml-analytics-lease`` (TTL ``member_ttl_s``), key ``active``: the lease of the one active analytics
  instance (:class:`~spark_ml.worker.cluster.leases.LeaseKeeper`: create to acquire, revision-checked renewals
  every TTL/3, a self-fence TTL/6 before the TTL, a delete on release).
* ``spark-ml-analytics`` (no TTL, one value per key): the checkpoint. ``s.<hex of the symbol's UTF-8>`` holds
  one symbol's paper position (msgpack of :meth:`PaperPosition.state` plus the symbol and the ``ts`` of its last
  prediction) and ``portfolio`` the book (:meth:`Portfolio.state`). Hex because a KV key allows only
  ``[-/_=.a-zA-Z0-9]`` and a symbol may hold any printable character.

Only the lease holder writes, and it checks that it still holds the lease before every write; the fence
makes a holder that lost contact stop before the server lets another instance take the lease.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgpack
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue

from spark_ml.worker.cluster._kv import open_bucket
from spark_ml.worker.cluster.leases import LeaseKeeper, OnLost

__all__ = ["ACTIVE_KEY", "LEASE_BUCKET", "PORTFOLIO_KEY", "STATE_BUCKET", "AnalyticsStore", "Saved", "symbol_key"]

log = logging.getLogger(__name__)

STATE_BUCKET = "spark-ml-analytics"
LEASE_BUCKET = "spark-ml-analytics-lease"
ACTIVE_KEY = "active"
PORTFOLIO_KEY = "portfolio"
_SYMBOL_PREFIX = "s."


def symbol_key(symbol: str) -> str:
    """The checkpoint key of ``symbol``."""
    return _SYMBOL_PREFIX + symbol.encode().hex()


@dataclass
class Saved:
    """A checkpoint as read back: per symbol its saved record, and the portfolio's state (None when absent)."""

    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)
    portfolio: dict[str, Any] | None = None


def pack(record: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb(record, use_bin_type=True)
    return out


class AnalyticsStore:
    """The lease and the checkpoint of the analytics service.

    Args:
        nc: a connection to a server with JetStream.
        holder: this instance's id (the lease's value).
        ttl_s: the lease's TTL (the lease bucket's, when this store creates it).
        on_lost: awaited when this instance lost the lease (renewal refused or not confirmed in time).
        replicas: replicas of the buckets when this store creates them.
    """

    def __init__(
        self, nc: Client, *, holder: str, ttl_s: float, on_lost: OnLost | None = None, replicas: int = 1
    ) -> None:
        self.nc = nc
        self.replicas = replicas
        self.lease = LeaseKeeper(
            nc, holder=holder, ttl_s=ttl_s, on_lost=on_lost, bucket=LEASE_BUCKET, replicas=replicas
        )
        self._kv: KeyValue | None = None
        self.writes = 0

    async def start(self) -> None:
        """Bind (or create) both buckets; raises ClusterRefused without JetStream."""
        self._kv = await open_bucket(self.nc, STATE_BUCKET, replicas=self.replicas)
        await self.lease.start()

    async def stop(self) -> None:
        """Stop renewing and release the lease (after the caller's final checkpoint)."""
        await self.lease.stop()

    @property
    def active(self) -> bool:
        """Whether this instance holds the lease now (and is not past its fence)."""
        return self.lease.holds(ACTIVE_KEY)

    async def acquire(self) -> bool:
        return await self.lease.acquire(ACTIVE_KEY)

    async def wait_freed(self, timeout: float) -> bool:
        return await self.lease.wait_freed(timeout)

    async def load(self) -> Saved:
        """Everything the checkpoint holds; unreadable records are logged and left out."""
        kv = self._bucket()
        saved = Saved()
        # The keys from the stream's per-subject state: one request, with a timeout. ``kv.keys()`` waits without
        # one for its watcher's end marker, and a take-over must not hang on it.
        prefix = f"$KV.{STATE_BUCKET}."
        info = await self.nc.jetstream().stream_info(f"KV_{STATE_BUCKET}", subjects_filter=f"{prefix}>")
        keys = sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))
        for key in keys:
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            if not entry.value:
                continue
            try:
                record = msgpack.unpackb(entry.value, raw=False, strict_map_key=False)
            except Exception as exc:
                log.error("analytics checkpoint %s: unreadable (%r); left out", key, exc)
                continue
            if key == PORTFOLIO_KEY:
                saved.portfolio = record
            elif key.startswith(_SYMBOL_PREFIX) and isinstance(record, dict) and "symbol" in record:
                saved.symbols[record["symbol"]] = record
        return saved

    async def save(self, records: dict[str, bytes], deleted: set[str]) -> bool:
        """Write ``records`` (key -> value; the portfolio's last) and delete ``deleted`` keys, while this
        instance holds the lease; False (nothing more written) once it does not."""
        kv = self._bucket()
        for key in deleted:
            if not self.active:
                return False
            try:
                await kv.delete(key)
            except nats.js.errors.KeyNotFoundError:
                pass
        for key, value in records.items():
            if not self.active:
                return False
            await kv.put(key, value)
            self.writes += 1
        return True

    def _bucket(self) -> KeyValue:
        assert self._kv is not None, "start() first"
        return self._kv

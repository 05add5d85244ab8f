"""Where the live analytics keep their state and decide who is active: two JetStream KV buckets of the same NATS.

* ``spark-ml-analytics-lease`` (TTL ``member_ttl_s``), key ``active``: the lease of the one active analytics
  instance (:class:`~spark_ml.worker.cluster.leases.LeaseKeeper`: create to acquire, revision-checked renewals
  every TTL/3, a self-fence TTL/6 before the TTL, a delete on release).
* ``spark-ml-analytics`` (no TTL, one value per key): the checkpoint. ``s.<hex of the symbol's UTF-8>.<slot>``
  (slot 0 or 1) holds one symbol's paper position (msgpack of :meth:`PaperPosition.state` plus the symbol and the
  ``ts`` of its last prediction); ``portfolio`` holds the commit record: the book (:meth:`Portfolio.state`) and
  the *manifest*, which slot of which symbol belongs to it. Hex because a KV key allows only ``[-/_=.a-zA-Z0-9]``
  and a symbol may hold any printable character.

**A checkpoint is all or nothing.** It takes several KV writes (one per changed symbol, then the commit record),
and the active instance may die between any two. Each changed symbol is written to the slot its last committed
record is *not* in, and only then the commit record names the new slots: until that one write lands, the
previous commit record and every record it names are untouched. So a standby always loads the symbols and the
book as they were at one moment. (Many symbols but one KV value per symbol, so a JetStream atomic batch, limited
to 1,000 messages, would not hold a checkpoint of the 10,000 symbols the service allows.) Records no commit
names any more (an evicted symbol's, or a new symbol's written by a checkpoint that never committed) are deleted
after the commit that drops them, and swept at a take-over.

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

__all__ = [
    "ACTIVE_KEY",
    "LEASE_BUCKET",
    "PORTFOLIO_KEY",
    "STATE_BUCKET",
    "AnalyticsStore",
    "Checkpoint",
    "Saved",
    "symbol_key",
]

log = logging.getLogger(__name__)

STATE_BUCKET = "spark-ml-analytics"
LEASE_BUCKET = "spark-ml-analytics-lease"
ACTIVE_KEY = "active"
PORTFOLIO_KEY = "portfolio"
_SYMBOL_PREFIX = "s."


def symbol_key(symbol: str, slot: int) -> str:
    """The checkpoint key of ``symbol``'s record in ``slot`` (0 or 1)."""
    return f"{_SYMBOL_PREFIX}{symbol.encode().hex()}.{slot}"


def _key_symbol(key: str) -> str | None:
    """The symbol of a record's key (None: not a symbol record of this layout)."""
    hexed, dot, slot = key.removeprefix(_SYMBOL_PREFIX).rpartition(".")
    if not (key.startswith(_SYMBOL_PREFIX) and dot and slot in ("0", "1")):
        return None
    try:
        return bytes.fromhex(hexed).decode()
    except ValueError:
        return None


@dataclass
class Saved:
    """The last committed checkpoint as read back: per symbol its record and its slot, and the portfolio's state
    (None when there is none)."""

    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)
    portfolio: dict[str, Any] | None = None


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint to write, encoded at one moment: the changed symbols' records (symbol -> (slot, record))
    and the commit record (the book and the manifest: symbol -> slot of every symbol the checkpoint holds)."""

    records: dict[str, tuple[int, bytes]]
    commit: bytes

    @classmethod
    def encode(
        cls, records: dict[str, tuple[int, bytes]], book: dict[str, Any], manifest: dict[str, int]
    ) -> Checkpoint:
        return cls(records, pack({"book": book, "manifest": manifest}))


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
        """The last committed checkpoint; an unreadable symbol record is logged and left out (that symbol starts
        afresh and leaves the book), an unreadable commit record is logged and reads as no checkpoint."""
        saved = Saved()
        commit = await self._read(PORTFOLIO_KEY)
        if commit is None:
            return saved
        if not (isinstance(commit, dict) and isinstance(commit.get("manifest"), dict) and "book" in commit):
            log.error("analytics checkpoint: the commit record is not of this version; starting afresh")
            return saved
        saved.portfolio = commit["book"]
        for symbol, slot in commit["manifest"].items():
            record = await self._read(symbol_key(symbol, slot)) if slot in (0, 1) else None
            if isinstance(record, dict) and record.get("symbol") == symbol:
                saved.symbols[symbol] = record
                saved.slots[symbol] = slot
            else:
                log.error("analytics checkpoint of %r (slot %r): missing or unreadable; it starts afresh", symbol, slot)
        return saved

    async def save(self, checkpoint: Checkpoint, dropped: set[str]) -> bool:
        """Write the changed records, then the commit record, then delete both records of each ``dropped``
        symbol (evicted, and not in the manifest), while this instance holds the lease; False (nothing more
        written) once it does not."""
        kv = self._bucket()
        for symbol, (slot, value) in checkpoint.records.items():
            if not self.active:
                return False
            await kv.put(symbol_key(symbol, slot), value)
            self.writes += 1
        if not self.active:
            return False
        await kv.put(PORTFOLIO_KEY, checkpoint.commit)
        self.writes += 1
        for symbol in dropped:
            for slot in (0, 1):
                if not self.active:
                    return False
                await self._delete(kv, symbol_key(symbol, slot))
        return True

    async def sweep(self, keep: set[str]) -> int:
        """Delete every record but the commit and those of ``keep`` (what an instance that died mid-checkpoint
        or before deleting left behind); the number deleted."""
        kv = self._bucket()
        # The keys from the stream's per-subject state: one request, with a timeout. ``kv.keys()`` waits without
        # one for its watcher's end marker, and a take-over must not hang on it.
        prefix = f"$KV.{STATE_BUCKET}."
        info = await self.nc.jetstream().stream_info(f"KV_{STATE_BUCKET}", subjects_filter=f"{prefix}>")
        deleted = 0
        for subject in sorted(info.state.subjects or {}):
            key = subject[len(prefix) :]
            if key == PORTFOLIO_KEY or _key_symbol(key) in keep:
                continue
            if not self.active:
                break
            deleted += await self._delete(kv, key)
        return deleted

    async def _read(self, key: str) -> Any:
        try:
            entry = await self._bucket().get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return msgpack.unpackb(entry.value, raw=False, strict_map_key=False)
        except Exception as exc:
            log.error("analytics checkpoint %s: unreadable (%r)", key, exc)
            return None

    @staticmethod
    async def _delete(kv: KeyValue, key: str) -> int:
        # Only what holds a value: deleting a key that has none would write a marker for nothing.
        try:
            await kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # absent, or deleted already
            return 0
        await kv.delete(key)
        return 1

    def _bucket(self) -> KeyValue:
        assert self._kv is not None, "start() first"
        return self._kv

"""Core-mode intake over symbol partitions: one owner per partition, state handed over through NATS KV.

docs/SCALEOUT.md is the design. The server maps ``market.snapshot.<SYMBOL>`` onto
``market.snapshot.part.<n>.<SYMBOL>``; this worker subscribes (no queue group) to the partitions whose lease it
holds, and takes the leases of the units the shared assignment gives it (:mod:`spark_ml.worker.cluster`):

- taking a unit: lease (KV create), claim its checkpoint (so a stale previous owner can no longer write it),
  restore its symbols' feature states, subscribe;
- while owning it: a checkpoint of its symbols every ``checkpoint_s``; the lease renewed every TTL/3;
- handing it over (assignment moved, or shutdown): drain its subscription, let queued batches finish, write
  the final checkpoint, release the lease (the successor sees the release and starts at once);
- losing it (renewals not confirmed: fenced, see :mod:`~spark_ml.worker.cluster.leases`): unsubscribe at once
  and forget its symbols.

The forwarder unit (index P) subscribes to bare ``market.snapshot`` and republishes each payload unchanged to
``market.snapshot.<SYMBOL>`` (symbol from the payload), where the mapping partitions it; one forwarder at a
time keeps their order. Undecodable payloads go to the processor, which dead-letters them as before.

Refusals: without JetStream (no leases) only ``SPARK_ML_SOLO=true`` runs, unpartitioned; without the mapping
(probed at start) one worker runs unpartitioned while it holds lease ``solo``, and any other refuses to start
with the mapping line to add (:class:`~spark_ml.core.errors.ClusterRefused`).

Predictions made from a state that is not warm carry ``Spark-Ml-Cold`` (:class:`ColdMarkingOutput`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from spark_ml.core import subjects
from spark_ml.core.codec import CONTENT_TYPES, Snapshot, SnapshotParser
from spark_ml.core.errors import ClusterRefused, InvalidInput, OwnershipLost
from spark_ml.core.features import WARMUP, FeatureStore
from spark_ml.core.features.checkpoint import decode_checkpoint, encode_checkpoint
from spark_ml.core.features.layout import StateTuple
from spark_ml.core.partition import part_filter, part_subject, partition_of, server_mappings, units
from spark_ml.worker.cluster import CheckpointStore, Membership
from spark_ml.worker.cluster.leases import SOLO, LeaseKeeper, unit_lease
from spark_ml.worker.cluster.membership import OnChange
from spark_ml.worker.cluster.owned import OwnedUnits
from spark_ml.worker.connect import connect
from spark_ml.worker.intake.base import AtMostOnce, DeadLetter, Delivery, Processor
from spark_ml.worker.intake.core import _PENDING_BYTES, _PENDING_MSGS, CoreIntake
from spark_ml.worker.lifecycle import cancel_all
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsio.batchpub import publish_batch
from spark_ml.worker.natsio.directsub import subscribe_direct, unroute
from spark_ml.worker.natsio.writer import Heads
from spark_ml.worker.pipeline.publish import CONTENT_TYPE, NatsOutput
from spark_ml.worker.settings import Settings

__all__ = [
    "H_COLD",
    "PROBE_CONTENT_TYPE",
    "ColdMarkingOutput",
    "PartitionedCoreIntake",
    "mapping_line",
    "probe_mapping",
    "unit_membership",
    "worker_id",
]

log = logging.getLogger(__name__)

H_COLD = "Spark-Ml-Cold"
"""Header of a prediction made from a state that is not warm; its value says why (``warmup``, ``checkpoint``)."""
_COLD_LINES = {why: f"{H_COLD}: {why}\r\n".encode() for why in ("warmup", "checkpoint")}
PROBE_CONTENT_TYPE = "application/x-spark-ml-probe"
"""Content type of the mapping probes a starting worker publishes; every intake drops them unseen."""


def worker_id() -> str:
    """A member id unique to this process: host, pid and a random suffix (a KV key token)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def unit_membership(nc: Client, member: str, settings: Settings, on_change: OnChange) -> Membership:
    """``member``'s place in the members bucket that assigns the units (not started yet): the member leaves the
    set ``settings.member_ttl_s`` after its last renewal; ``on_change`` hears its units (docs/SCALEOUT.md)."""
    return Membership(
        nc,
        worker_id=member,
        units=units(settings.partitions),
        ttl_s=settings.member_ttl_s,
        on_change=on_change,
        replicas=settings.js_replicas,
    )


def mapping_line(partitions: int) -> str:
    """The server config line that partitions core-mode snapshots (as in deploy/nats/nats.conf)."""
    body = ", ".join(f'"{src}": "{dest}"' for src, dest in server_mappings(partitions).items())
    return f"mappings: {{ {body} }}"


async def probe_mapping(nc: Client, partitions: int, *, timeout: float = 2.0) -> str | None:
    """None when the server maps ``market.snapshot.<X>`` onto ``partition(P, X)``; else what it does instead.

    Publishes a few probe snapshots (content type :data:`PROBE_CONTENT_TYPE`, dropped by every intake) to
    ``market.snapshot.<probe>`` and looks where they arrive.
    """
    token = uuid.uuid4().hex[:10]
    probes = [f"spark-ml-probe-{token}-{i}" for i in range(4)]
    seen: dict[str, str] = {}
    all_seen = asyncio.Event()

    async def on_probe(msg: Msg) -> None:
        seen.setdefault(msg.subject.rsplit(".", 1)[-1], msg.subject)
        if len(seen) == len(probes):
            all_seen.set()

    subs: list[Subscription] = []
    try:
        for p in probes:
            subs.append(await nc.subscribe(f"{subjects.SNAPSHOT}.part.*.{p}", cb=on_probe))
            subs.append(await nc.subscribe(subjects.snapshot_for(p), cb=on_probe))
        await nc.flush()
        for p in probes:
            await nc.publish(subjects.snapshot_for(p), b"", headers={"Content-Type": PROBE_CONTENT_TYPE})
        await nc.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), timeout)
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    for p in probes:
        got = seen.get(p)
        if got == part_subject(partition_of(p, partitions), p):
            continue
        if got is None or got == subjects.snapshot_for(p):
            return "the NATS server does not map market.snapshot.<SYMBOL> onto symbol partitions"
        return f"the NATS server maps market.snapshot.<SYMBOL> onto other partitions than partition({partitions},1)"
    return None


class ColdMarkingOutput:
    """Core publishes of predictions, with ``Spark-Ml-Cold`` on those made from a state that is not warm.

    A symbol's state is cold for its first :data:`WARMUP` snapshots (the indicators have no history yet), and
    after a restore from a checkpoint that may be stale (its previous owner did not hand it over) for
    :data:`WARMUP` more. A batch of warm symbols only (the usual case) is published as before, in one write.

    Args:
        nc: the connection.
        features: the engine's feature store (read for each cold symbol's count of snapshots).
        max_symbols: bound on the symbols remembered as warm.
    """

    def __init__(self, nc: Client, features: FeatureStore, *, max_symbols: int = 10_000) -> None:
        self.nc = nc
        self._inner = NatsOutput(nc)
        self._features = features
        self._max_symbols = max_symbols
        self._warm: set[str] = set()
        self._stale_until: dict[str, int] = {}
        """Restored from a checkpoint that may be stale: cold until the state's count passes this."""
        self.cold_published = 0

    def forget(self, symbols: Iterable[str]) -> None:
        """These symbols' states are gone (their partition moved away): they start cold if they come back."""
        for sym in symbols:
            self._warm.discard(sym)
            self._stale_until.pop(sym, None)

    def restored(self, states: dict[str, StateTuple], *, current: bool) -> None:
        """These states were restored from a checkpoint; ``current`` when it was written at a hand-over."""
        self.forget(states)
        if not current:
            for sym in states:
                self._stale_until[sym] = self._features.state(sym).n + WARMUP

    async def publish(self, snaps: Sequence[Snapshot], payloads: list[bytes], heads: Heads) -> None:
        warm = self._warm
        for s in snaps:
            if s.symbol not in warm:
                break
        else:
            await publish_batch(self.nc, subjects.PREDICTION, payloads, heads=heads)
            return
        await self._publish_marked(snaps, payloads, heads)

    def _reasons(self, snaps: Sequence[Snapshot]) -> list[str | None]:
        # The store holds each state after the whole batch; the count at snapshot i is that minus the
        # snapshots of the same symbol after it.
        reasons: list[str | None] = [None] * len(snaps)
        later: dict[str, int] = {}
        final: dict[str, int] = {}
        warm = self._warm
        now_warm: list[str] = []
        for i in range(len(snaps) - 1, -1, -1):
            sym = snaps[i].symbol
            if sym in warm:
                continue
            k = later.get(sym, 0)
            later[sym] = k + 1
            n_final = final.get(sym)
            if n_final is None:
                n_final = final[sym] = self._features.state(sym).n
            n = n_final - k
            if n <= WARMUP:
                reasons[i] = "warmup"
            elif n <= self._stale_until.get(sym, 0):
                reasons[i] = "checkpoint"
            elif k == 0:
                now_warm.append(sym)
        if len(warm) + len(now_warm) > self._max_symbols:
            warm.clear()
        for sym in now_warm:
            warm.add(sym)
            self._stale_until.pop(sym, None)
        return reasons

    async def _publish_marked(self, snaps: Sequence[Snapshot], payloads: list[bytes], heads: Heads) -> None:
        reasons = self._reasons(snaps)
        # Cold predictions carry one more header line: the batch goes out in one write, each with its block.
        blocks = [heads] * len(payloads) if isinstance(heads, bytes) else list(heads)
        for i, reason in enumerate(reasons):
            if reason is not None:
                blocks[i] += _COLD_LINES[reason]
                self.cold_published += 1
        await publish_batch(self.nc, subjects.PREDICTION, payloads, heads=blocks)

    async def dead_letter(self, letter: DeadLetter) -> None:
        await self._inner.dead_letter(letter)


class _ProbeFilter:
    """The processor's entry points, with mapping probes dropped (they carry a Content-Type of their own)."""

    def __init__(self, processor: Processor) -> None:
        self._processor = processor
        self._on_raw_sync = processor.on_raw_sync
        self.reject = processor.reject
        self.pool = getattr(processor, "pool", None)

    async def on_msg(self, msg: Delivery) -> None:
        await self._processor.on_msg(msg)

    async def on_raw(self, subject: str, raw: bytes, headers: dict[str, str] | None) -> None:
        if headers is None or headers.get(CONTENT_TYPE) != PROBE_CONTENT_TYPE:
            await self._processor.on_raw(subject, raw, headers)

    def on_raw_sync(self, subject: bytes, raw: bytes, headers: dict[str, str] | None = None) -> Awaitable[None] | None:
        if headers is not None and headers.get(CONTENT_TYPE) == PROBE_CONTENT_TYPE:
            return None
        return self._on_raw_sync(subject, raw, headers)


class _Pool(Protocol):
    def wait_handled(self, timeout: float) -> Awaitable[bool]: ...


@dataclass
class _Unit:
    n: int
    sub: Subscription
    revision: int = 0
    """Of its checkpoint: the next save must name it."""
    saved_empty: bool = False


class PartitionedCoreIntake:
    """Core-mode intake over the partitions this worker owns (see the module docstring).

    Args:
        nc: the connection.
        settings: partitions, member_ttl_s (also the lease TTL), checkpoint_s, solo, drain_timeout_s.
        metrics: the process's metric set.
        features: the engine's feature store (restored and checkpointed per partition).
        owned: where the units owned are reported (the ``ml.predict`` service follows it; solo: all of them).
    """

    def __init__(
        self, nc: Client, settings: Settings, metrics: Metrics, features: FeatureStore, owned: OwnedUnits | None = None
    ) -> None:
        self.nc = nc
        self.settings = settings
        self.metrics = metrics
        self.features = features
        self.partitions = settings.partitions
        self.member = worker_id()
        self.settlement = AtMostOnce()
        self.output = ColdMarkingOutput(nc, features, max_symbols=settings.max_symbols)
        self.direct = False
        self.mode: Literal["stopped", "partitioned", "solo"] = "stopped"
        self.ownership_changes = 0
        """Units taken or given up (lost included) since start."""
        self.ownership = owned if owned is not None else OwnedUnits()
        self.leases: LeaseKeeper | None = None
        self.checkpoints: CheckpointStore | None = None
        self.membership: Membership | None = None
        self._units: dict[int, _Unit] = {}
        self._processor: _ProbeFilter | None = None
        self._solo: CoreIntake | None = None
        self.control: Client | None = None
        """The connection of leases, membership and checkpoints (opened at start)."""
        self._parser = SnapshotParser(settings.max_payload)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._part_cache: dict[str, int] = {}

    @property
    def owned(self) -> frozenset[int]:
        """The units this worker consumes now."""
        return frozenset(self._units)

    def _report(self) -> None:
        """Tell :attr:`ownership` what is owned now: the units, or every unit while consuming unpartitioned."""
        if self.mode == "solo" and self._solo is not None:
            self.ownership.set_everything(self.partitions)
        else:
            self.ownership.set(self._units)

    # ---- start / stop ---------------------------------------------------------------------------

    async def start(self, processor: Processor) -> None:
        s = self.settings
        self._processor = _ProbeFilter(processor)
        # Leases, membership and checkpoints get a connection of their own: under a burst the intake pauses the
        # data connection's reader (backpressure), and lease renewals waiting behind it would expire.
        self.control = await connect(s, name=f"spark-ml-control-{os.getpid()}")
        try:
            await self._start(processor)
        except BaseException:
            await self._close_control()
            raise

    async def _close_control(self) -> None:
        # close, not drain: by now the leases are released and the checkpoints saved (request-reply, answered);
        # draining would wait on the KV watchers' subscriptions for nothing.
        if self.control is not None:
            with contextlib.suppress(Exception):
                await self.control.close()
            self.control = None

    async def _start(self, processor: Processor) -> None:
        s = self.settings
        assert self.control is not None
        self.leases = LeaseKeeper(
            self.control,
            holder=self.member,
            ttl_s=s.member_ttl_s,
            on_lost=self._on_lost,
            on_freed=lambda _key: self._wake.set(),
            replicas=s.js_replicas,
        )
        try:
            await self.leases.start()
        except ClusterRefused as exc:
            self.leases = None
            if not s.solo:
                raise ClusterRefused(
                    "core mode keeps one owner per partition with leases in JetStream KV, and the NATS server has "
                    "no JetStream: start nats-server with -js (see deploy/nats/nats.conf), or set "
                    "SPARK_ML_SOLO=true if this is the only worker"
                ) from exc
            log.warning("no JetStream on the server: running unpartitioned as the only worker (SPARK_ML_SOLO)")
            await self._start_solo()
            return
        missing = await probe_mapping(self.control, self.partitions)
        if missing is not None:
            if not await self.leases.acquire(SOLO):
                holder = await self.leases.holder_of(SOLO)
                await self.leases.stop()
                raise ClusterRefused(
                    f"{missing}, and another worker ({holder}) already runs unpartitioned (lease {SOLO!r}); "
                    f"two workers without partitions compute wrong features. Add to the server config: "
                    f"{mapping_line(self.partitions)}"
                )
            log.warning(
                "%s: running unpartitioned as the only worker (lease %r); for more workers add to the server "
                "config: %s",
                missing,
                SOLO,
                mapping_line(self.partitions),
            )
            await self._start_solo()
            self._tasks.append(asyncio.create_task(self._solo_loop(), name="spark-ml-solo-lease"))
            return
        self.checkpoints = CheckpointStore(self.control, replicas=s.js_replicas)
        await self.checkpoints.open()
        self.mode = "partitioned"
        self.membership = unit_membership(self.control, self.member, s, self._on_assignment)
        await self.membership.start()
        await self._reconcile()
        self.direct = True  # set per subscription in _take; True unless nats-py's internals changed
        self._tasks += [
            asyncio.create_task(self._reconcile_loop(), name="spark-ml-partitions"),
            asyncio.create_task(self._checkpoint_loop(), name="spark-ml-checkpoints"),
        ]
        log.info("partitions: member %s owns units %s", self.member, sorted(self._units))

    async def _start_solo(self) -> None:
        assert self._processor is not None
        self.mode = "solo"
        self._solo = CoreIntake(self.nc)
        await self._solo.start(self._processor)
        self.direct = self._solo.direct
        self._report()

    async def stop(self) -> None:
        """Hand every unit over (drain, finish queued batches, final checkpoint, release), then leave."""
        self._stopping = True
        await cancel_all(self._tasks)
        self._tasks.clear()
        if self._solo is not None:
            await self._solo.stop()
            self._solo = None
        if self.membership is not None:
            await self.membership.stop()  # the others see this worker leave and wait for its releases
        async with self._lock:
            await self._hand_over(sorted(self._units))
        if self.leases is not None:
            await self.leases.stop()
        await self._close_control()
        self.mode = "stopped"
        self._report()

    # ---- ownership ------------------------------------------------------------------------------

    async def _on_assignment(self, assigned: frozenset[int]) -> None:
        self._wake.set()

    async def _reconcile_loop(self) -> None:
        tick = self.settings.member_ttl_s / 3
        # Not `while True`: Python 3.11's wait_for returns (and swallows the cancel) when the wake-up and stop()'s
        # cancel arrive together, and the loop would go on for ever while stop() waits for it.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)
            self._wake.clear()
            try:
                await self._reconcile()
            except Exception:
                log.exception("partition reconcile failed; retrying")

    async def _reconcile(self) -> None:
        """Give up the units no longer assigned to this worker, then take the assigned ones that are free."""
        assert self.membership is not None
        async with self._lock:
            if self._stopping:
                return
            wanted = self.membership.assigned
            leaving = sorted(set(self._units) - wanted)
            if leaving:
                await self._hand_over(leaving)
            missing = sorted(wanted - set(self._units))
            if missing:
                await asyncio.gather(*(self._take(n) for n in missing))

    async def _take(self, n: int) -> None:
        assert self.leases is not None and self.checkpoints is not None and self._processor is not None
        key = unit_lease(n)
        if not await self.leases.acquire(key):
            return
        revision = 0
        try:
            if n < self.partitions:
                revision, restored = await self._restore(n, current=self.leases.prior.get(key) == "released")
                sub, direct = await subscribe_direct(
                    self.nc,
                    part_filter(n),
                    queue="",
                    handler=self._processor.on_raw,
                    fast=self._processor.on_raw_sync,
                    undecodable=self._processor.reject,
                    pending_msgs_limit=_PENDING_MSGS,
                    pending_bytes_limit=_PENDING_BYTES,
                )
                self.direct = self.direct and direct
            else:
                restored = 0
                sub = await self.nc.subscribe(
                    subjects.SNAPSHOT,
                    cb=self._forward,
                    pending_msgs_limit=_PENDING_MSGS,
                    pending_bytes_limit=_PENDING_BYTES,
                )
        except Exception:
            log.exception("unit %d: could not take it over; releasing its lease", n)
            await self.leases.release(key)
            return
        self._units[n] = _Unit(n, sub, revision)
        self.ownership_changes += 1
        self._report()
        log.info("unit %d: owned (%d symbols restored, lease was %s)", n, restored, self.leases.prior.get(key))

    async def _restore(self, n: int, *, current: bool) -> tuple[int, int]:
        """Claim unit ``n``'s checkpoint and load its states; ``(revision, symbols restored)``."""
        assert self.checkpoints is not None
        data, revision = await self.checkpoints.claim(n)
        states: dict[str, StateTuple] = {}
        if data:
            try:
                _, states = decode_checkpoint(data)
            except InvalidInput as exc:
                log.error("unit %d: checkpoint unreadable (%s); starting from empty state", n, exc)
        stale = self._symbols_of(n)
        self.features.drop(stale)
        self.output.forget(stale)
        try:
            self.features.restore(states)
        except ValueError as exc:
            log.error("unit %d: checkpoint states refused (%s); starting from empty state", n, exc)
            states = {}
        self.output.restored(states, current=current)
        return revision, len(states)

    async def _hand_over(self, ns: Sequence[int]) -> None:
        """Drain the units' subscriptions, let queued batches finish, save their checkpoints, release them."""
        gone = [self._units.pop(n) for n in ns if n in self._units]
        if not gone:
            return
        self._report()  # requests for these partitions are refused from now on, not answered from a leaving state
        assert self.leases is not None
        await asyncio.gather(*(self._unsubscribe(u.sub, drain=True) for u in gone))
        await self._wait_in_flight(self.settings.drain_timeout_s)
        by_unit = self._symbols_by_unit()
        await asyncio.gather(*(self._save(u, by_unit.get(u.n, [])) for u in gone if u.n < self.partitions))
        for u in gone:
            symbols = by_unit.get(u.n, [])
            self.features.drop(symbols)
            self.output.forget(symbols)
            await self.leases.release(unit_lease(u.n))
            self.ownership_changes += 1
        log.info("units %s: handed over", [u.n for u in gone])

    async def _on_lost(self, key: str) -> None:
        if key == SOLO:
            log.error("lease %r lost: stopped consuming until it is back", SOLO)
            if self._solo is not None:
                solo, self._solo = self._solo, None
                self._report()
                await solo.stop()
                self.features.drop(self.features.symbols())
                self.output.forget(list(self.output._warm))
            return
        n = int(key.rsplit(".", 1)[-1])
        unit = self._units.pop(n, None)  # no lock: a fenced unit stops at once, whatever else is going on
        if unit is None:
            return
        self._report()
        await self._unsubscribe(unit.sub, drain=False)
        await self._wait_in_flight(self.settings.member_ttl_s / 6)
        symbols = self._symbols_of(n)
        self.features.drop(symbols)
        self.output.forget(symbols)
        self.ownership_changes += 1
        log.warning("unit %d: lost (another worker may own it now); its %d symbols dropped", n, len(symbols))
        self._wake.set()

    async def _solo_loop(self) -> None:
        assert self.leases is not None
        while True:
            await asyncio.sleep(self.settings.member_ttl_s / 3)
            if self._solo is None and not self._stopping and await self.leases.acquire(SOLO):
                log.warning("lease %r back: consuming again", SOLO)
                await self._start_solo()

    async def _unsubscribe(self, sub: Subscription, *, drain: bool) -> None:
        with contextlib.suppress(Exception):
            if drain:
                await sub.drain()  # type: ignore[no-untyped-call]
            else:
                await sub.unsubscribe()
        unroute(self.nc, sub)

    async def _wait_in_flight(self, timeout: float) -> None:
        pool = self._processor.pool if self._processor is not None else None
        if pool is not None and hasattr(pool, "wait_handled"):
            waiter: _Pool = pool
            if not await waiter.wait_handled(timeout):
                log.warning("queued batches not finished within %.1fs", timeout)

    # ---- checkpoints ----------------------------------------------------------------------------

    def _part(self, symbol: str) -> int:
        n = self._part_cache.get(symbol)
        if n is None:
            if len(self._part_cache) >= 65_536:
                self._part_cache.clear()
            n = self._part_cache[symbol] = partition_of(symbol, self.partitions)
        return n

    def _symbols_of(self, n: int) -> list[str]:
        return [s for s in self.features.symbols() if self._part(s) == n]

    def _symbols_by_unit(self) -> dict[int, list[str]]:
        by_unit: dict[int, list[str]] = {}
        for s in self.features.symbols():
            by_unit.setdefault(self._part(s), []).append(s)
        return by_unit

    async def _save(self, unit: _Unit, symbols: list[str]) -> None:
        assert self.checkpoints is not None
        if not symbols and unit.saved_empty:
            self.metrics.checkpointed(unit.n)
            return
        data = encode_checkpoint(0, self.features.export(symbols))
        try:
            unit.revision = await self.checkpoints.save(unit.n, data, revision=unit.revision)
        except OwnershipLost as exc:
            log.warning("unit %d: %s", unit.n, exc)
            if self._units.get(unit.n) is unit and self.leases is not None:
                await self._on_lost(unit_lease(unit.n))
            return
        except Exception as exc:
            log.warning("unit %d: checkpoint not written (%r)", unit.n, exc)
            return
        unit.saved_empty = not symbols
        self.metrics.checkpointed(unit.n)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_s)
            async with self._lock:
                by_unit = self._symbols_by_unit()
                owned = [u for u in self._units.values() if u.n < self.partitions]
                await asyncio.gather(*(self._save(u, by_unit.get(u.n, [])) for u in owned))

    # ---- forwarder ------------------------------------------------------------------------------

    async def _forward(self, msg: Msg) -> None:
        """Bare ``market.snapshot``: republish unchanged on the symbol's subject, where the mapping partitions it."""
        content_type = msg.headers.get("Content-Type") if msg.headers else None
        if content_type == PROBE_CONTENT_TYPE or self._processor is None:
            return
        try:
            snap = self._parser.parse(msg.data, msg.subject, content_type, 0.0)
        except InvalidInput:
            await self._processor.on_raw(msg.subject, msg.data, msg.headers)  # dead-lettered as before
            return
        headers = dict(msg.headers) if msg.headers else {}
        headers.setdefault(CONTENT_TYPE, CONTENT_TYPES[snap.encoding])
        try:
            await self.nc.publish(subjects.snapshot_for(snap.symbol), msg.data, headers=headers)
        except Exception as exc:
            log.warning("forwarding a bare snapshot of %s failed: %r", snap.symbol, exc)

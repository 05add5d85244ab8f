"""JetStream intake over symbol partitions: one pinned owner per partition, state handed over through NATS KV.

docs/SCALEOUT.md is the design. The stream ``MARKET_SNAPSHOTS`` stores ``market.snapshot.<SYMBOL>`` on
``market.snapshot.part.<n>.<SYMBOL>`` (its subject transform) and bare ``market.snapshot`` as it is. Each unit
has a durable consumer with a ``pinned_client`` priority group: ``ml-workers-p<n>`` on partition n,
``ml-workers-fwd`` on bare ``market.snapshot`` (the forwarder, unit P). A worker pulls only on the units the
shared assignment gives it (:class:`~spark_ml.worker.cluster.Membership`), with pinned pulls
(:mod:`spark_ml.worker.natsio.jspull`), so the server delivers a unit to one worker at a time:

- a new pin (the first message of a unit carries it): before anything is processed, the unit's checkpoint is
  claimed (a stale owner can no longer write it) and its states restored into the feature store, and the
  consumer is RESET to the checkpoint's sequence + 1 (to its ack floor + 1 without a checkpoint); messages
  then come again, in order, from a fresh inbox, and any at or below the restored sequence is only acked;
- while owning a unit: its checkpoint every ``checkpoint_s``: its symbols' states and the highest stream
  sequence whose prediction is out, taken when the two agree (module notes below);
- the unit assigned elsewhere, or shutdown: stop pulling, let its batches finish, save its checkpoint, UNPIN
  (the successor's waiting request is pinned at once), forget its symbols;
- a ``423`` (the pin went elsewhere), or no request with the pin id for longer than the pin could last (the
  process stalled, or lost its connection: a restarted server knows no pins): its symbols are forgotten once
  its batches in the pool are done, and the next takeover waits for them before it restores.

Fence (a stalled owner, research notes pitfall 2): the pin guarantees one *delivery*, not one *processing*. A
worker resumed after a pause longer than its pin's TTL holds messages another worker now replays from the
checkpoint. So nothing of a unit is published, acked, checkpointed or UNPINned unless this worker is pinned on
it and a request with the pin id went out less than the TTL minus the keep-alive ago (:meth:`_fenced`): what
it held is dropped (the new owner's replay brings it, with the same ``Nats-Msg-Id`` and the same features).

A standby learns of its pin only from a delivered message. When the previous owner died holding a unit's
last messages un-acked, nothing is deliverable until their ack wait ends, so an assigned, unpinned unit whose
consumer shows nobody pinned and messages pending is RESET to its ack floor (:meth:`_probe_pins`). An assigned
unit with nothing to deliver is idle here: its checkpoint is loaded (read only) and it counts as owned, so that
``ml.predict`` is answered for its symbols before any message brings a pin.

The forwarder's owner republishes each bare snapshot, payload and headers unchanged, through JetStream to
``market.snapshot.<SYMBOL>`` with ``Nats-Msg-Id: fwd-<stream seq>`` (a replay stores nothing twice within the
stream's duplicate window) and acks it after the PubAck; undecodable ones go to the processor, which
dead-letters and terminates them as before.

Settlement and output are :class:`~spark_ml.worker.intake.jetstream.JetStreamOutcomes`'; settling also moves
each unit's settled sequence. When is a checkpoint consistent: a symbol's state may hold a message only once
its prediction is out. With one shard (the default) a batch is settled before the next one is processed, so
at settle time every processed message is settled and the checkpoint is taken then; with more shards, only
when none of the unit's messages is in the pool. A batch whose publish failed leaves states ahead of what is
out: the unit is taken over again (restore, RESET) once its other batches are done, after a nak's delay.
A RESET restarts the server's delivery count, so ``max_deliver`` is counted here: a message whose prediction
failed that often is dead-lettered (``max_deliver``) and terminated when it comes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.codec import CONTENT_TYPES, Snapshot, SnapshotParser
from spark_ml.core.errors import InvalidInput, OwnershipLost, SparkMlError
from spark_ml.core.features import FeatureStore
from spark_ml.core.features.checkpoint import decode_checkpoint, encode_checkpoint
from spark_ml.core.features.layout import StateTuple
from spark_ml.core.partition import part_filter, partition_of, stream_transform, units
from spark_ml.worker.cluster import CheckpointStore, Membership
from spark_ml.worker.cluster.owned import OwnedUnits
from spark_ml.worker.intake.base import Processor
from spark_ml.worker.intake.jetstream import JetStreamOutcomes
from spark_ml.worker.intake.partitioned_core import unit_membership, worker_id
from spark_ml.worker.lifecycle import cancel_all
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsio import jsadmin
from spark_ml.worker.natsio.jspub import NotStored
from spark_ml.worker.natsio.jspull import JsMsg, PullConsumer
from spark_ml.worker.natsio.jswire import ACK, PIN_ID, nak_body
from spark_ml.worker.natsio.writer import Heads
from spark_ml.worker.pipeline.publish import CONTENT_TYPE
from spark_ml.worker.settings import Settings

__all__ = ["GROUP", "PartitionedJetStreamIntake", "unit_consumer", "unit_filter"]

log = logging.getLogger(__name__)

GROUP = "ml"
"""The priority group of every unit's consumer."""
_FWD_BATCH = 256
_NAK_DELAY_S = 1.0
_FIRST_PROBE_S = 0.5


def unit_consumer(n: int, partitions: int) -> str:
    """The durable consumer of unit ``n``: ``ml-workers-p<n>``, or ``ml-workers-fwd`` for the forwarder."""
    return f"{subjects.JS_CONSUMER}-fwd" if n == partitions else f"{subjects.JS_CONSUMER}-p{n}"


def unit_filter(n: int, partitions: int) -> str:
    """What unit ``n``'s consumer delivers: its partition's subjects, or bare ``market.snapshot``."""
    return subjects.SNAPSHOT if n == partitions else part_filter(n)


@dataclass(eq=False)
class _Unit:
    """One unit this worker pulls on, and what it knows of its state."""

    n: int
    pull: PullConsumer
    owned: bool = False
    """Taken over under the current pin (checkpoint restored, consumer reset)."""
    idle: bool = False
    """Assigned here, nothing to deliver and nobody pinned (a pin comes only with a message): its checkpoint's
    states are loaded so that ``ml.predict`` is answered for its symbols; the first message's pin takes it over."""
    revision: int = 0
    """Of its checkpoint: the next save names it."""
    restored_seq: int = 0
    """Messages at or below were folded into the restored states: acked, not processed."""
    settled_seq: int = 0
    """The highest stream sequence whose prediction is out (or that was forwarded)."""
    saved_seq: int = -1
    in_flight: int = 0
    """Handed on (to the processor or the forwarder) and not yet settled (never below 0: a drain that timed out
    sets it to 0, and what was still in the pool settles later)."""
    symbols: set[str] = field(default_factory=set)
    broken: bool = False
    """A publish failed: its states are ahead of what is out (taken over again before its next checkpoint)."""
    saving: bool = False
    last_capture: float = 0.0
    failures: dict[int, int] = field(default_factory=dict)
    """Stream sequence -> publishes of its prediction that failed. Retaking the unit RESETs its consumer, which
    restarts the server's delivery count: ``max_deliver`` is kept here instead."""


class PartitionedJetStreamIntake(JetStreamOutcomes):
    """JetStream intake over the units this worker is assigned and pinned on (see the module docstring).

    Args:
        nc: the connection.
        settings: partitions, member_ttl_s, pin_ttl_s, checkpoint_s, ack wait, max deliveries, in-flight bound,
            pool_size (one shard: checkpoints at settle time), drain_timeout_s, output acknowledgement.
        metrics: the process's metric set.
        features: the engine's feature store (restored and checkpointed per partition).
        owned: where the units owned are reported (the ``ml.predict`` service follows it).
    """

    def __init__(
        self, nc: Client, settings: Settings, metrics: Metrics, features: FeatureStore, owned: OwnedUnits | None = None
    ) -> None:
        super().__init__(nc, settings, metrics)
        self.features = features
        self.partitions = settings.partitions
        self.member = worker_id()
        self.checkpoints = CheckpointStore(nc, replicas=settings.js_replicas)
        self.membership: Membership | None = None
        self.ownership_changes = 0
        """Units taken over or given up since start."""
        self.ownership = owned if owned is not None else OwnedUnits()
        self._units: dict[int, _Unit] = {}
        self._by_pull: dict[PullConsumer, _Unit] = {}
        self._processor: Processor | None = None
        self._parser = SnapshotParser(settings.max_payload)
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._forwarding: asyncio.Queue[JsMsg] = asyncio.Queue()
        self._stopping = False
        self._at_settle = settings.pool_size == 1
        self._pull_in_flight = max(64, self.in_flight_max // 4)

    @property
    def owned(self) -> frozenset[int]:
        """The units this worker is pinned on and has taken over, and the idle ones assigned to it."""
        return frozenset(n for n, u in self._units.items() if u.owned or u.idle)

    @property
    def pulling(self) -> frozenset[int]:
        """The units this worker pulls on (assigned to it)."""
        return frozenset(self._units)

    # ---- start / stop ---------------------------------------------------------------------------

    async def ensure(self) -> None:
        """The stream with the partition transform, and every unit's pinned consumer (refused when dropped)."""
        s = self.settings
        await jsadmin.ensure_stream(
            self.nc,
            subjects.JS_STREAM,
            subjects=[subjects.SNAPSHOT, subjects.SNAPSHOT_WILDCARD],
            transform=stream_transform(self.partitions),
            replicas=s.js_replicas,
        )
        await asyncio.gather(*(self._ensure_consumer(n) for n in range(units(self.partitions))))

    async def _ensure_consumer(self, n: int) -> None:
        s = self.settings
        consumer = jsadmin.PinnedConsumer(
            unit_consumer(n, self.partitions),
            unit_filter(n, self.partitions),
            group=GROUP,
            pin_ttl_s=s.pin_ttl_s,
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
            max_ack_pending=max(4 * self._pull_in_flight, 1024),
            backoff_s=s.js_backoff_s,
        )
        await jsadmin.ensure_pinned_consumer(self.nc, subjects.JS_STREAM, consumer)

    async def start(self, processor: Processor) -> None:
        s = self.settings
        self._processor = processor
        await self.ensure()
        await self._start_outcomes("*")
        await self.checkpoints.open()
        self._tasks = [
            asyncio.create_task(self._forwarder(), name="spark-ml-js-forward"),
            asyncio.create_task(self._checkpoint_loop(), name="spark-ml-js-checkpoints"),
            asyncio.create_task(self._probe_loop(), name="spark-ml-js-pins"),
        ]
        self.membership = unit_membership(self.nc, self.member, s, self._on_assignment)
        await self.membership.start()
        # Idle units answer ml.predict from the start when the probe is quick (it goes on in the background).
        first = asyncio.create_task(self._probe_pins(), name="spark-ml-js-pins-first")
        self._tasks.append(first)
        await asyncio.wait((first,), timeout=_FIRST_PROBE_S)
        log.info("partitions (jetstream): member %s pulls on units %s", self.member, sorted(self._units))

    async def stop(self) -> None:
        """Leave the members, then hand every unit over: stop pulling, finish, checkpoint, UNPIN, forget."""
        self._stopping = True
        if self.membership is not None:
            await self.membership.stop()
        async with self._lock:
            await asyncio.gather(*(self._release(n) for n in list(self._units)))
        await cancel_all(self._tasks)
        self._tasks.clear()
        await self._stop_outcomes()

    # ---- assignment -----------------------------------------------------------------------------

    async def _on_assignment(self, assigned: frozenset[int]) -> None:
        async with self._lock:
            if self._stopping:
                return
            leaving = set(self._units) - assigned
            await asyncio.gather(*(self._release(n) for n in leaving))
            for n in sorted(assigned - set(self._units)):
                await self._acquire(n)
        log.info("units assigned: %s", sorted(assigned))

    async def _acquire(self, n: int) -> None:
        """Pull on unit ``n`` without a pin id: the server pins this worker once the unit's pin is free."""
        s = self.settings
        holder: list[_Unit] = []

        async def on_msg(msg: JsMsg) -> None:
            await self._on_msg(holder[0], msg)

        pull = PullConsumer(
            self.nc,
            subjects.JS_STREAM,
            unit_consumer(n, self.partitions),
            on_msg,
            max_in_flight=self._pull_in_flight,
            batch=s.batch_max,
            ack_wait_s=s.ack_wait_s,
            recover=lambda: self._ensure_consumer(n),
            group=GROUP,
            pin_ttl_s=s.pin_ttl_s,
            on_pinned=self._on_pinned,
            on_pin_lost=self._on_pin_lost,
            on_undecodable=on_msg,
        )
        unit = _Unit(n, pull)
        holder.append(unit)
        self._units[n] = unit
        self._by_pull[pull] = unit
        await pull.start()

    async def _release(self, n: int) -> None:
        """Hand unit ``n`` over: stop pulling, let its batches finish, save its checkpoint, UNPIN, forget it."""
        unit = self._units.pop(n, None)
        if unit is None:
            return
        self.ownership.set(self.owned)  # requests are refused from now on, not answered from a leaving state
        pull = unit.pull
        await pull.stop()
        await self._until_settled(unit, self.settings.drain_timeout_s)
        if unit.owned:
            fenced = self._fenced(unit)  # the drain outlasted the pin: another worker may hold it now
            if not unit.broken and not fenced:
                await self._save(unit, self._capture(unit), final=True)
            if not fenced:
                with contextlib.suppress(Exception):
                    await jsadmin.unpin(self.nc, subjects.JS_STREAM, pull.name, GROUP)
            self.ownership_changes += 1
        elif pull.pin_id is not None and not pull.stalled():
            # Pinned, its takeover cut short: nothing of it was processed; free the pin for the successor now
            # rather than after the pin's TTL.
            with contextlib.suppress(Exception):
                await jsadmin.unpin(self.nc, subjects.JS_STREAM, pull.name, GROUP)
        self._forget(unit)
        self._by_pull.pop(pull, None)
        log.info("unit %d: handed over (checkpoint at stream sequence %d)", n, unit.saved_seq)

    # ---- pins -----------------------------------------------------------------------------------

    async def _on_pinned(self, pull: PullConsumer, pin: str) -> bool:
        """Take unit over under a new pin: restore its checkpoint, RESET its consumer (deliveries are held)."""
        unit = self._by_pull[pull]
        retry = unit.broken and unit.owned
        unit.owned = unit.idle = False
        self.ownership.set(self.owned)
        # Messages of an earlier ownership may still be in the pool: they finish with the state they began with.
        await self._until_settled(unit, self.settings.drain_timeout_s)
        if retry:  # a publish failed: wait as a nak's delay would (short of the pin's TTL: no pull goes out now)
            await asyncio.sleep(min(_NAK_DELAY_S, self.settings.pin_ttl_s / 4))
        if pull.stalled():  # no request kept the pin meanwhile: another worker may hold it; RESET is not ours
            raise OwnershipLost(unit.n, "the pin may have lapsed while its earlier messages drained")
        data, revision = await self.checkpoints.claim(unit.n)
        seq, states = self._decode(unit.n, data)
        self._forget(unit)
        try:
            self.features.restore(states)
        except ValueError as exc:
            log.error("unit %d: checkpoint states refused (%s); starting from the ack floor", unit.n, exc)
            seq, states = 0, {}
        unit.symbols = set(states)
        unit.revision = revision
        unit.broken = False
        reset_to = await jsadmin.reset(self.nc, subjects.JS_STREAM, pull.name, seq + 1 if seq else 0)
        unit.restored_seq = unit.settled_seq = unit.saved_seq = seq if seq else reset_to - 1
        unit.last_capture = time.monotonic()
        unit.owned = True
        self.ownership_changes += 1
        self.ownership.set(self.owned)
        log.info("unit %d: taken over (%d symbols restored at stream sequence %d)", unit.n, len(states), seq)
        return True

    def _decode(self, n: int, data: bytes | None) -> tuple[int, dict[str, StateTuple]]:
        if not data:
            return 0, {}
        try:
            return decode_checkpoint(data)
        except InvalidInput as exc:
            log.error("unit %d: checkpoint unreadable (%s); starting from the ack floor", n, exc)
            return 0, {}

    def _on_pin_lost(self, pull: PullConsumer) -> None:
        unit = self._by_pull.get(pull)
        if unit is not None:
            asyncio.get_running_loop().create_task(self._lost(unit), name="spark-ml-js-pin-lost")

    async def _lost(self, unit: _Unit) -> None:
        """Another worker holds the unit's pin: forget its states once its batches in the pool are done."""
        was_owned, unit.owned, unit.idle = unit.owned, False, False
        self.ownership.set(self.owned)
        # Before standing by for the next pin: a takeover that found them still in the pool would wait, pinned
        # but sending no request, and might outlast its pin.
        await self._until_settled(unit, self.settings.drain_timeout_s, give_up=False)
        if unit.owned:  # pinned again meanwhile: the takeover restored it
            return
        self._forget(unit)
        unit.failures.clear()
        if was_owned:
            self.ownership_changes += 1
        log.warning("unit %d: pin lost (another worker owns it now); its symbols dropped", unit.n)
        if self._units.get(unit.n) is unit and not self._stopping:
            unit.pull.reacquire()  # still assigned here: stand by for the pin

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.pin_ttl_s / 2)
            try:
                await self._probe_pins()
            except Exception as exc:
                log.debug("pin probe failed: %r", exc)

    async def _probe_pins(self) -> None:
        """Assigned units nobody is pinned on: RESET those with a dead owner's un-acked messages (else nothing is
        deliverable until their ack wait ends); load the checkpoint of those with nothing to deliver (idle)."""
        # Idle units are not asked again: only this worker pulls on them, so only its pull can be pinned there.
        probed = [
            u for u in self._units.values() if not (u.owned or u.idle) and u.pull.pulling and u.pull.pin_id is None
        ]
        infos = await asyncio.gather(
            *(jsadmin.consumer_info(self.nc, subjects.JS_STREAM, u.pull.name) for u in probed), return_exceptions=True
        )
        for unit, info in zip(probed, infos, strict=True):
            if isinstance(info, BaseException):
                log.debug("unit %d: pin probe failed: %r", unit.n, info)
                continue
            if unit.owned or unit.pull.pin_id is not None:
                continue  # pinned while the info was on its way
            pinned = jsadmin.pinned_client_id(info, GROUP) is not None
            if not pinned and info.get("num_ack_pending", 0) > 0:
                log.info("unit %d: un-acked messages of a pin that lapsed; resetting to its ack floor", unit.n)
                await jsadmin.reset(self.nc, subjects.JS_STREAM, unit.pull.name, 0)
            elif not pinned and not info.get("num_pending", 0):
                await self._idle(unit)

    async def _idle(self, unit: _Unit) -> None:
        """Load an idle unit's checkpoint (read only: the pin's takeover claims it) for ml.predict."""
        loaded = await self.checkpoints.load(unit.n)
        if unit.owned or unit.pull.pin_id is not None or self._units.get(unit.n) is not unit:
            return  # pinned meanwhile: the takeover restores it
        _, states = self._decode(unit.n, loaded[0] if loaded else None)
        self._forget(unit)
        with contextlib.suppress(ValueError):
            self.features.restore(states)
            unit.symbols = set(states)
        unit.idle = True
        self.ownership.set(self.owned)
        log.info("unit %d: idle here (%d symbols loaded for requests)", unit.n, len(unit.symbols))

    # ---- delivery and settlement ----------------------------------------------------------------

    async def _on_msg(self, unit: _Unit, msg: JsMsg) -> None:
        if not unit.owned:  # no takeover under this pin (it failed, or the pin was lost): not ours to process
            unit.pull.drop((msg,))
            return
        if msg.seq <= unit.restored_seq:
            await unit.pull.settle((msg,))  # folded into the restored states already
            return
        unit.in_flight += 1
        assert self._processor is not None
        try:
            refused = msg.undecodable or (self._exhausted(unit, msg.seq) if unit.failures else None)
            if refused is not None:  # dead-lettered, then terminated: on_dead
                await self._processor.reject(msg.data, msg.subject, refused, ctx=msg)
            elif unit.n == self.partitions:
                self._forwarding.put_nowait(msg)
            else:
                await self._processor.on_msg(msg)
        except Exception:
            unit.in_flight = max(0, unit.in_flight - 1)
            raise

    def _exhausted(self, unit: _Unit, seq: int) -> SparkMlError | None:
        """Why message ``seq`` is not tried again: its prediction failed ``max_deliver`` times (else None)."""
        failed = unit.failures.get(seq, 0)
        if failed < self.settings.max_deliver:
            return None
        del unit.failures[seq]
        return SparkMlError(
            f"not acknowledged after {failed} deliveries (its prediction was not stored)", code="max_deliver"
        )

    def _unit_of(self, ctx: object) -> _Unit | None:
        if isinstance(ctx, JsMsg) and ctx.consumer is not None:
            return self._by_pull.get(ctx.consumer)
        return None

    def _fenced(self, unit: _Unit) -> bool:
        """Whether nothing of ``unit`` may be published, acked or checkpointed: it is not taken over under a pin
        this worker still holds (lost, or it may have lapsed while the process stalled). Another worker may own
        it now: its messages are left to that worker's replay from the checkpoint (docs/SCALEOUT.md)."""
        return not unit.owned or unit.pull.pin_id is None or unit.pull.stalled()

    def _fence(self, snaps: Sequence[Snapshot]) -> list[bool] | None:
        """Which of ``snaps`` belong to a fenced unit; None when none does (the common case)."""
        verdicts: dict[_Unit, bool] = {}
        mask: list[bool] = []
        for snap in snaps:
            unit = self._unit_of(snap.ctx)
            if unit is None:
                mask.append(False)
                continue
            fenced = verdicts.get(unit)
            if fenced is None:
                fenced = verdicts[unit] = self._fenced(unit)
                if fenced and unit.owned:
                    log.warning("unit %d: the pin may have lapsed (process stalled): its output is held back", unit.n)
            mask.append(fenced)
        return mask if any(mask) else None

    async def publish(self, snaps: Sequence[Snapshot], payloads: list[bytes], heads: Heads) -> None:
        """Output, fenced: predictions of a unit this worker may no longer own are not published (nor acked)."""
        fenced = self._fence(snaps)
        if fenced is None:
            await super().publish(snaps, payloads, heads)
            return
        keep = [i for i, f in enumerate(fenced) if not f]
        if not keep:
            return
        kept = [snaps[i] for i in keep]
        kept_heads = heads if isinstance(heads, bytes) else [heads[i] for i in keep]
        try:
            await super().publish(kept, [payloads[i] for i in keep], kept_heads)
        except NotStored:
            partial = self._partial
            if partial is not None and partial[0] is kept:  # as on_publish_failed will see the batch: whole
                stored = [False] * len(snaps)
                for j, i in enumerate(keep):
                    stored[i] = partial[1][j]
                self._partial = (snaps, stored)
            raise

    async def settle(self, published: Sequence[Snapshot]) -> None:
        fenced = self._fence(published)
        if fenced is not None:
            for snap, f in zip(published, fenced, strict=True):
                if f and isinstance(snap.ctx, JsMsg) and (unit := self._unit_of(snap.ctx)) is not None:
                    unit.pull.drop((snap.ctx,))  # not acked: the owner's replay brings it again
                    unit.in_flight = max(0, unit.in_flight - 1)
            published = [s for s, f in zip(published, fenced, strict=True) if not f]
        await super().settle(published)
        touched: set[_Unit] = set()
        by_pull = self._by_pull
        for snap in published:
            ctx = snap.ctx
            if not isinstance(ctx, JsMsg) or ctx.consumer is None or (unit := by_pull.get(ctx.consumer)) is None:
                continue
            unit.in_flight = max(0, unit.in_flight - 1)
            unit.symbols.add(snap.symbol)
            if unit.failures:
                unit.failures.pop(ctx.seq, None)
            if ctx.seq > unit.settled_seq:
                unit.settled_seq = ctx.seq
            touched.add(unit)
        now = time.monotonic()
        for unit in touched:
            if now - unit.last_capture >= self.settings.checkpoint_s and (self._at_settle or not unit.in_flight):
                self._save_soon(unit)

    async def on_dead(self, ctx: object) -> None:
        await super().on_dead(ctx)
        unit = self._unit_of(ctx)
        if unit is not None:
            unit.in_flight = max(0, unit.in_flight - 1)

    async def on_publish_failed(self, snaps: Sequence[Snapshot]) -> None:
        partial = self._partial
        had_partial = partial is not None and partial[0] is snaps
        stored = partial[1] if partial is not None and had_partial else [False] * len(snaps)
        fenced = self._fence(snaps)
        if fenced is not None:  # not nak'ed: the unit's owner may hold these very messages now
            for snap, f in zip(snaps, fenced, strict=True):
                if f and isinstance(snap.ctx, JsMsg) and (unit := self._unit_of(snap.ctx)) is not None:
                    unit.pull.drop((snap.ctx,))
                    unit.in_flight = max(0, unit.in_flight - 1)
            keep = [i for i, f in enumerate(fenced) if not f]
            snaps, stored = [snaps[i] for i in keep], [stored[i] for i in keep]
            if had_partial:  # as the parent will look for it: this very list
                self._partial = (snaps, stored)
        await super().on_publish_failed(snaps)
        for snap, ok in zip(snaps, stored, strict=True):
            if not ok and isinstance(snap.ctx, JsMsg) and (failed := self._unit_of(snap.ctx)) is not None:
                failed.failures[snap.ctx.seq] = failed.failures.get(snap.ctx.seq, 0) + 1
        for unit in {u for s in snaps if (u := self._unit_of(s.ctx)) is not None}:
            unit.in_flight = max(0, unit.in_flight - sum(1 for s in snaps if self._unit_of(s.ctx) is unit))
            if unit.owned and not unit.broken:
                unit.broken = True
                log.warning("unit %d: predictions not published; taking it over again from its checkpoint", unit.n)
                unit.pull.retake()

    async def _until_settled(self, unit: _Unit, timeout: float, *, give_up: bool = True) -> None:
        """Wait (bounded) until none of the unit's messages is in the pool; ``give_up``: then stop counting them.

        A takeover waits for them before it restores: a message of an earlier pin folded into the restored
        states would put them ahead of the replay (its messages refused as out of order).
        """
        deadline = time.monotonic() + timeout
        while unit.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if unit.in_flight > 0 and give_up:
            log.warning("unit %d: %d messages still in flight after %.1fs", unit.n, unit.in_flight, timeout)
            unit.in_flight = 0

    def _forget(self, unit: _Unit) -> None:
        """Drop the unit's symbols from the feature store (those seen, and any other of its partition)."""
        n = unit.n
        if n < self.partitions:
            stale = {s for s in self.features.symbols() if partition_of(s, self.partitions) == n}
            self.features.drop(stale | unit.symbols)
        unit.symbols = set()

    # ---- checkpoints ----------------------------------------------------------------------------

    def _capture(self, unit: _Unit) -> tuple[int, bytes]:
        """The unit's checkpoint now: ``(sequence, bytes)`` (call only when states and sequence agree)."""
        unit.last_capture = time.monotonic()
        return unit.settled_seq, encode_checkpoint(unit.settled_seq, self.features.export(unit.symbols))

    def _save_soon(self, unit: _Unit) -> None:
        if unit.owned and not unit.broken and unit.settled_seq == unit.saved_seq:
            self.metrics.checkpointed(unit.n)  # nothing settled since the last checkpoint: it is current
        if unit.saving or unit.broken or unit.settled_seq == unit.saved_seq or self._fenced(unit):
            return
        unit.saving = True
        captured = self._capture(unit)
        asyncio.get_running_loop().create_task(self._save(unit, captured), name="spark-ml-js-checkpoint")

    async def _save(self, unit: _Unit, captured: tuple[int, bytes], *, final: bool = False) -> None:
        seq, data = captured
        unit.saving = True
        try:
            if seq != unit.saved_seq:
                unit.revision = await self.checkpoints.save(unit.n, data, revision=unit.revision)
                unit.saved_seq = seq
                self.metrics.checkpointed(unit.n)
        except OwnershipLost as exc:
            log.warning("unit %d: %s", unit.n, exc)
            if not final and not self._fenced(unit):
                unit.pull.retake()  # the checkpoint says another worker took it: take it over again or lose the pin
        except Exception as exc:
            log.warning("unit %d: checkpoint not written (%r)", unit.n, exc)
        finally:
            unit.saving = False

    async def _checkpoint_loop(self) -> None:
        """Checkpoints of quiet units (nothing of theirs in the pool: states and sequence agree)."""
        while True:
            await asyncio.sleep(self.settings.checkpoint_s)
            for unit in list(self._units.values()):
                if unit.in_flight == 0:
                    self._save_soon(unit)

    # ---- forwarder ------------------------------------------------------------------------------

    async def _forwarder(self) -> None:
        """Republish bare snapshots on their symbol's subject, in order, a batch of PubAcks at a time."""
        queue = self._forwarding
        while True:
            batch = [await queue.get()]
            while len(batch) < _FWD_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._forward(batch)
            except Exception:
                log.exception("forwarding %d bare snapshots failed", len(batch))

    async def _forward(self, batch: list[JsMsg]) -> None:
        assert self._processor is not None
        sends: list[tuple[JsMsg, str, dict[str, str]]] = []
        for msg in batch:
            unit = self._unit_of(msg)
            if unit is not None and self._fenced(unit):
                if msg.consumer is not None:
                    msg.consumer.drop((msg,))  # the forwarder's new owner forwards it (fwd-<seq>: stored once)
                unit.in_flight = max(0, unit.in_flight - 1)
                continue
            headers = {k: v for k, v in (msg.headers or {}).items() if k != PIN_ID}
            try:
                snap = self._parser.parse(msg.data, msg.subject, headers.get("Content-Type"), 0.0)
            except InvalidInput:
                await self._processor.on_msg(msg)  # dead-lettered and terminated (on_dead) as before
                continue
            headers.setdefault(CONTENT_TYPE, CONTENT_TYPES[snap.encoding])
            headers["Nats-Msg-Id"] = f"fwd-{msg.seq}"
            sends.append((msg, subjects.snapshot_for(snap.symbol), headers))
        # Started in order, so they reach the server in order; their PubAcks are awaited together.
        results = await asyncio.gather(
            *(self.js.publish(subject, msg.data, headers=headers) for msg, subject, headers in sends),
            return_exceptions=True,
        )
        done: list[JsMsg] = []
        for (msg, _, _), result in zip(sends, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("forwarding a bare snapshot failed: %r", result)
                await self._settle_forwarded(msg, nak_body(_NAK_DELAY_S))
            else:
                done.append(msg)
        for msg in done:
            await self._settle_forwarded(msg, ACK)

    async def _settle_forwarded(self, msg: JsMsg, body: bytes) -> None:
        if msg.consumer is not None:
            await msg.consumer.settle((msg,), body)
        unit = self._unit_of(msg)
        if unit is not None:
            unit.in_flight = max(0, unit.in_flight - 1)
            if body == ACK and msg.seq > unit.settled_seq:
                unit.settled_seq = msg.seq

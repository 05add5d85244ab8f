"""Intake adapters behind one small interface: core NATS queue group, or a JetStream durable pull consumer.

Both feed :meth:`worker.stream.StreamProcessor.on_msg`; what differs is what happens after a batch is
published. Core mode is at-most-once and has nothing to settle. JetStream mode acknowledges a message
only after its prediction (or dead letter) has been handed to the connection, terminates poison
messages after dead-lettering them, and negatively acknowledges with a delay when publishing failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from core import subjects
from core.codec import Snapshot
from worker.directsub import subscribe_direct, unroute
from worker.metrics import Metrics
from worker.publish import dead_letter
from worker.settings import Settings
from worker.stream import StreamProcessor

__all__ = ["CoreIntake", "Intake", "JetStreamIntake", "make_intake"]

log = logging.getLogger(__name__)

# Bounds on what the NATS client buffers for a core subscription: beyond them it drops and reports a
# slow consumer (counted in ml_slow_consumer_drops_total), so a burst cannot grow memory without limit.
_PENDING_MSGS = 65_536
_PENDING_BYTES = 64 * 1024 * 1024
_NAK_DELAY_S = 1.0


class Intake(Protocol):
    """Where snapshots come from."""

    async def start(self) -> None:
        """Begin delivering messages to the processor."""
        ...

    async def stop(self) -> None:
        """Stop taking new messages; those already received are still handed to the processor."""
        ...


class CoreIntake:
    """Queue-group subscriptions on ``market.snapshot`` and ``market.snapshot.>`` (at-most-once)."""

    def __init__(self, nc: Client, processor: StreamProcessor) -> None:
        self.nc = nc
        self.processor = processor
        self._subs: list[Subscription] = []
        self.direct = False
        """Whether messages go from the client's parser straight to the processor (see worker.directsub)."""

    async def start(self) -> None:
        for subject in (subjects.SNAPSHOT, subjects.SNAPSHOT_WILDCARD):
            sub, self.direct = await subscribe_direct(
                self.nc,
                subject,
                queue=subjects.QUEUE_GROUP,
                handler=self.processor.on_raw,
                pending_msgs_limit=_PENDING_MSGS,
                pending_bytes_limit=_PENDING_BYTES,
            )
            self._subs.append(sub)
        if not self.direct:
            log.warning("nats-py internals changed: core intake runs through plain callbacks (slower)")

    async def stop(self) -> None:
        # drain, not unsubscribe: messages already buffered in the client are still processed.
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.drain()  # type: ignore[no-untyped-call]
            unroute(self.nc, sub)
        self._subs.clear()


class JetStreamIntake:
    """A durable pull consumer shared by every worker process (at-least-once).

    Args:
        nc: the connection.
        processor: the stream processor (its pool bounds how much is fetched).
        settings: ack wait, max deliveries, backoff, replicas.
        metrics: the process's metric set.
    """

    def __init__(self, nc: Client, processor: StreamProcessor, settings: Settings, metrics: Metrics) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.processor = processor
        self.settings = settings
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._advisory: Subscription | None = None
        self._psub: JetStreamContext.PullSubscription | None = None
        self._running = False
        # Fetch only while the pool has room: at most this many messages are in the process at once,
        # a small multiple of a batch so the pool always has the next batch ready.
        self.in_flight_max = max(2 * settings.batch_max, 64)
        processor.settle = self.settle
        processor.on_dead = self.on_dead
        processor.on_publish_failed = self.on_publish_failed
        processor.message_id = self.message_id

    async def ensure(self) -> None:
        """Create the stream and the durable consumer, or reuse them as they are."""
        s = self.settings
        try:
            await self.js.stream_info(subjects.JS_STREAM)
        except NotFoundError:
            await self.js.add_stream(
                StreamConfig(
                    name=subjects.JS_STREAM,
                    subjects=[subjects.SNAPSHOT, subjects.SNAPSHOT_WILDCARD],
                    storage=StorageType.FILE,
                    num_replicas=s.js_replicas,
                    duplicate_window=120.0,
                )
            )
            log.info("created stream %s (replicas=%d)", subjects.JS_STREAM, s.js_replicas)
        config = ConsumerConfig(
            durable_name=subjects.JS_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=s.ack_wait_s,
            max_deliver=s.max_deliver,
            backoff=list(s.js_backoff_s) or None,
            max_ack_pending=max(4 * self.in_flight_max, 1024),
        )
        try:
            await self.js.consumer_info(subjects.JS_STREAM, subjects.JS_CONSUMER)
        except NotFoundError:
            await self.js.add_consumer(subjects.JS_STREAM, config)
            log.info("created durable consumer %s", subjects.JS_CONSUMER)

    async def start(self) -> None:
        await self.ensure()
        psub = await self.js.pull_subscribe_bind(durable=subjects.JS_CONSUMER, stream=subjects.JS_STREAM)
        advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{subjects.JS_STREAM}.{subjects.JS_CONSUMER}"
        self._advisory = await self.nc.subscribe(advisory, queue=subjects.QUEUE_GROUP, cb=self._on_max_deliveries)
        self._running = True
        self._psub = psub
        self._task = asyncio.create_task(self._fetch_loop(psub), name="spark-ml-js-fetch")

    async def _fetch_loop(self, psub: JetStreamContext.PullSubscription) -> None:
        pool = self.processor.pool
        while self._running:
            room = self.in_flight_max - pool.pending()
            if room <= 0:
                await asyncio.sleep(0.001)
                continue
            try:
                msgs = await psub.fetch(min(room, self.settings.batch_max), timeout=0.5)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:
                if not self._running:
                    return
                log.warning("jetstream fetch failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self.processor.on_msg(msg)

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._advisory is not None:
            with contextlib.suppress(Exception):
                await self._advisory.unsubscribe()
        # The pull subscription goes too: nats-py's fetch never marks its queue done, so draining the
        # connection with it in place waits out nats-py's 30 s drain timeout (measured: 30.1 s to stop an
        # idle worker). Anything it still holds is unacknowledged and will be redelivered.
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
            self._psub = None

    # ---- hooks called by the processor ---------------------------------------------------------

    @staticmethod
    def message_id(snap: Snapshot) -> str | None:
        """``Nats-Msg-Id`` of a prediction: the input's stream sequence, so a redelivery deduplicates."""
        ctx = snap.ctx
        if isinstance(ctx, Msg) and ctx.reply:
            return f"{subjects.JS_STREAM}-{ctx.metadata.sequence.stream}"
        return None

    async def settle(self, published: Sequence[Snapshot], _: Sequence[Snapshot]) -> None:
        for snap in published:
            if isinstance(snap.ctx, Msg):
                await snap.ctx.ack()

    async def on_dead(self, ctx: object) -> None:
        """A dead-lettered message is terminated: it would fail the same way on every redelivery."""
        if isinstance(ctx, Msg) and ctx.reply:
            await ctx.term()

    async def on_publish_failed(self, snaps: Sequence[Snapshot]) -> None:
        for snap in snaps:
            if isinstance(snap.ctx, Msg) and snap.ctx.reply:
                with contextlib.suppress(Exception):
                    await snap.ctx.nak(delay=_NAK_DELAY_S)

    async def _on_max_deliveries(self, msg: Msg) -> None:
        """A message ran out of deliveries without an ack: it stays in the stream, so dead-letter a copy."""
        try:
            seq = int(json.loads(msg.data)["stream_seq"])
            raw = await self.js.get_msg(subjects.JS_STREAM, seq)
            await dead_letter(
                self.nc,
                raw.data or b"",
                reason="max_deliver",
                message=f"not acknowledged after {self.settings.max_deliver} deliveries",
                subject=raw.subject or "",
                stream_seq=seq,
            )
            self.metrics.dead_letters.labels("max_deliver").inc()
        except Exception:
            log.exception("could not dead-letter a message that hit max deliveries")


def make_intake(nc: Client, processor: StreamProcessor, settings: Settings, metrics: Metrics) -> Intake:
    if settings.mode == "jetstream":
        return JetStreamIntake(nc, processor, settings, metrics)
    return CoreIntake(nc, processor)

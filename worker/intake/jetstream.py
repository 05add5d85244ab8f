"""JetStream intake: a durable pull consumer shared by every worker process, at-least-once.

It acknowledges a message only after its prediction (or dead letter) has been handed to the connection, or,
when a stream stores the predictions, only after that stream confirmed storing it; it terminates poison
messages after dead-lettering them, and negatively acknowledges with a delay when publishing failed. It is
its own :class:`~spark_ml.worker.intake.base.Settlement` and :class:`~spark_ml.worker.intake.base.Output`:
the two share what a partly stored batch left to settle. That part, :class:`JetStreamOutcomes`, is also
the partitioned intake's (:mod:`spark_ml.worker.intake.partitioned_js`): each message is settled through the
pull consumer that received it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from spark_ml.core import subjects
from spark_ml.core.codec import Snapshot, detect_encoding
from spark_ml.worker.intake.base import DeadLetter, Processor
from spark_ml.worker.lifecycle import cancel_all
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsio.jspub import AckedPublisher, NotStored
from spark_ml.worker.natsio.jspull import JsMsg, PullConsumer
from spark_ml.worker.natsio.jswire import ACK, TERM, nak_body
from spark_ml.worker.natsio.writer import Heads
from spark_ml.worker.pipeline.publish import CONTENT_TYPE, NatsOutput
from spark_ml.worker.settings import Settings

__all__ = ["JetStreamIntake", "JetStreamOutcomes", "reject_undecodable", "settle_each"]

log = logging.getLogger(__name__)

_NAK_DELAY_S = 1.0
_OUTPUT_CHECK_S = 10.0


def reject_undecodable(processor: Processor) -> Callable[[JsMsg], Awaitable[None]]:
    """A pull consumer's ``on_undecodable``: the processor dead-letters the message (``decode``), then it is
    terminated (:meth:`JetStreamOutcomes.on_dead`)."""

    async def reject(msg: JsMsg) -> None:
        assert msg.undecodable is not None
        await processor.reject(msg.data, msg.subject, msg.undecodable, ctx=msg)

    return reject


async def settle_each(ctxs: Iterable[object], body: bytes = ACK) -> None:
    """Send ``body`` for each JetStream message among ``ctxs`` through the pull consumer that received it."""
    by_consumer: dict[PullConsumer, list[JsMsg]] = {}
    for ctx in ctxs:
        if isinstance(ctx, JsMsg) and ctx.consumer is not None:
            by_consumer.setdefault(ctx.consumer, []).append(ctx)
    for consumer, msgs in by_consumer.items():
        await consumer.settle(msgs, body)


class JetStreamOutcomes:
    """What JetStream intakes share: settling each message through its pull consumer, and the output.

    Predictions go out with a core publish carrying ``Nats-Msg-Id``, or, when a stream stores
    ``ml.prediction`` (found at start and re-checked every ``_OUTPUT_CHECK_S``, or forced by
    ``js_output_ack``), through JetStream with PubAcks (:class:`spark_ml.worker.natsio.jspub.AckedPublisher`):
    inputs are acked only once their predictions are stored, and nak'ed with a delay when the stream refuses
    them or does not answer in time. Messages that ran out of deliveries are dead-lettered from the
    consumers' advisories (:meth:`_watch_max_deliveries`).

    Args:
        nc: the connection.
        settings: ack wait, max deliveries, backoff, replicas, in-flight bound, output acknowledgement.
        metrics: the process's metric set.
    """

    def __init__(self, nc: Client, settings: Settings, metrics: Metrics) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.metrics = metrics
        self._advisory: Subscription | None = None
        # Requested plus un-acked messages of this process: a few batches, so the pool always has the next
        # one on its way while a killed worker leaves little to wait out the ack wait.
        self.in_flight_max = settings.js_in_flight or max(4 * settings.batch_max, 64)
        self.acked: AckedPublisher | None = None
        """Set while predictions go through JetStream with PubAcks."""
        self._output_task: asyncio.Task[None] | None = None
        self._partial: tuple[Sequence[Snapshot], list[bool]] | None = None
        self._core = NatsOutput(nc, message_id=self.message_id)

    @property
    def settlement(self) -> JetStreamOutcomes:
        """Ack, terminate or nak: :meth:`settle`, :meth:`on_dead`, :meth:`on_publish_failed`."""
        return self

    @property
    def output(self) -> JetStreamOutcomes:
        """Predictions with ``Nats-Msg-Id``, with or without PubAcks: :meth:`publish`, :meth:`dead_letter`."""
        return self

    async def _start_outcomes(self, consumers: str) -> None:
        """Find where predictions go (and keep looking), and dead-letter what ``consumers`` (a token or ``*``)
        gave up on."""
        await self._check_output()
        if self.settings.js_output_ack == "auto":
            self._output_task = asyncio.create_task(self._watch_output(), name="spark-ml-js-output")
        advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{subjects.JS_STREAM}.{consumers}"
        self._advisory = await self.nc.subscribe(advisory, queue=subjects.QUEUE_GROUP, cb=self._on_max_deliveries)

    async def _stop_outcomes(self) -> None:
        """Stop watching; the PubAck inbox stays until the connection drains (the last batches await theirs)."""
        if self._output_task is not None:
            await cancel_all([self._output_task])
        if self._advisory is not None:
            with contextlib.suppress(Exception):
                await self._advisory.unsubscribe()

    # ---- where predictions go ------------------------------------------------------------------

    async def _check_output(self) -> None:
        mode = self.settings.js_output_ack
        stream: str | None = None
        if mode == "auto":
            try:
                stream = await self.js.find_stream_name_by_subject(subjects.PREDICTION)
            except NotFoundError:
                stream = None
        want = mode == "on" or stream is not None
        if want and self.acked is None:
            acked = AckedPublisher(self.nc, subjects.PREDICTION, timeout_s=self.settings.js_puback_timeout_s)
            await acked.start()
            self.acked = acked
            log.info("predictions stored in stream %s: inputs acked after the PubAck", stream or "(forced)")
        elif not want and self.acked is not None:
            acked, self.acked = self.acked, None
            log.info("no stream stores %s any more: predictions published without PubAcks", subjects.PREDICTION)
            await acked.stop()

    async def _watch_output(self) -> None:
        while True:
            await asyncio.sleep(_OUTPUT_CHECK_S)
            try:
                await self._check_output()
            except Exception as exc:
                log.debug("predictions stream check failed: %s: %s", type(exc).__name__, exc)

    async def publish(self, snaps: Sequence[Snapshot], payloads: list[bytes], heads: Heads) -> None:
        """Output: through JetStream with PubAcks when a stream stores predictions, else core publishes."""
        acked = self.acked
        if acked is None:
            await self._core.publish(snaps, payloads, heads)
            return
        try:
            await acked.publish(payloads, [self.message_id(s) for s in snaps], heads)
        except NotStored as exc:
            # on_publish_failed comes next with this very batch: it acks what was stored, naks the rest
            self._partial = (snaps, exc.stored)
            raise

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Output: a core publish (a dead letter is terminated right after: no PubAck to wait for)."""
        await self._core.dead_letter(letter)

    # ---- settlement ------------------------------------------------------------------------------

    @staticmethod
    def message_id(snap: Snapshot) -> str | None:
        """``Nats-Msg-Id`` of a prediction: the input's stream sequence, so a redelivery deduplicates."""
        ctx = snap.ctx
        if isinstance(ctx, JsMsg):
            return f"{subjects.JS_STREAM}-{ctx.seq}"
        return None

    async def settle(self, published: Sequence[Snapshot]) -> None:
        """Ack a published batch, one write per consumer (its rejected messages were terminated when dead-lettered)."""
        await settle_each(s.ctx for s in published)

    async def on_dead(self, ctx: object) -> None:
        """A dead-lettered message is terminated: it would fail the same way on every redelivery."""
        if isinstance(ctx, JsMsg) and ctx.consumer is not None:
            await ctx.consumer.settle((ctx,), TERM)

    async def on_publish_failed(self, snaps: Sequence[Snapshot]) -> None:
        """Predictions not published (or not stored): redeliver the inputs after a delay, never ack them.

        When the stream stored part of the batch, those inputs are acked: redelivering them would only
        bring a duplicate, and count a delivery towards ``max_deliver`` for an input that succeeded.
        """
        partial, self._partial = self._partial, None
        failed: Sequence[Snapshot] = snaps
        if partial is not None and partial[0] is snaps:
            stored = partial[1]
            failed = [s for s, ok in zip(snaps, stored, strict=True) if not ok]
            with contextlib.suppress(Exception):
                await settle_each(s.ctx for s, ok in zip(snaps, stored, strict=True) if ok)
        with contextlib.suppress(Exception):
            await settle_each((s.ctx for s in failed), nak_body(_NAK_DELAY_S))

    async def _on_max_deliveries(self, msg: Msg) -> None:
        """A message ran out of deliveries without an ack: it stays in the stream, so dead-letter a copy."""
        try:
            seq = int(json.loads(msg.data)["stream_seq"])
            raw = await self.js.get_msg(subjects.JS_STREAM, seq)
            payload = raw.data or b""
            await self._core.dead_letter(
                DeadLetter(
                    payload,
                    reason="max_deliver",
                    message=f"not acknowledged after {self.settings.max_deliver} deliveries",
                    subject=raw.subject or "",
                    stream_seq=seq,
                    encoding=detect_encoding(payload, (raw.headers or {}).get(CONTENT_TYPE)),
                )
            )
            self.metrics.dead_letters.labels("max_deliver").inc()
        except Exception:
            log.exception("could not dead-letter a message that hit max deliveries")


class JetStreamIntake(JetStreamOutcomes):
    """A durable pull consumer shared by every worker process (at-least-once).

    Intake runs on our own pull requests (:class:`~spark_ml.worker.natsio.jspull.PullConsumer`, made by
    :meth:`start`); settlement and output are :class:`JetStreamOutcomes`'.

    Args:
        nc: the connection.
        settings: ack wait, max deliveries, backoff, replicas, in-flight bound, output acknowledgement.
        metrics: the process's metric set.
    """

    def __init__(self, nc: Client, settings: Settings, metrics: Metrics) -> None:
        super().__init__(nc, settings, metrics)
        self.pull: PullConsumer | None = None
        """The pull consumer, once started."""

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

    async def start(self, processor: Processor) -> None:
        await self.ensure()
        await self._start_outcomes(subjects.JS_CONSUMER)
        s = self.settings
        self.pull = PullConsumer(
            self.nc,
            subjects.JS_STREAM,
            subjects.JS_CONSUMER,
            processor.on_msg,
            max_in_flight=self.in_flight_max,
            batch=s.batch_max,
            ack_wait_s=s.ack_wait_s,
            recover=self.ensure,
            on_undecodable=reject_undecodable(processor),
        )
        await self.pull.start()

    async def stop(self) -> None:
        """Stop asking for messages; those already delivered still reach the pool (and are acked there).

        The PubAck inbox stays until the connection drains: the pool's last batches still await theirs.
        """
        if self.pull is not None:
            await self.pull.stop()
        await self._stop_outcomes()

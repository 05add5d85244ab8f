"""The stream handler: NATS message -> snapshot -> shard -> batch -> predictions / dead letters.

Intake (the NATS callback) only decodes and validates, so refused payloads are dead-lettered at once and
good ones reach their shard quickly; everything else happens a batch at a time in :meth:`handle_batch`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg

from spark_ml.core import subjects
from spark_ml.core.codec import Snapshot, SnapshotParser
from spark_ml.core.engine import BatchResult, Engine
from spark_ml.core.errors import InvalidInput, SparkMlError
from spark_ml.worker.metrics import Metrics, Status
from spark_ml.worker.natsio.batchpub import publish_batch
from spark_ml.worker.pipeline.pool import Pool
from spark_ml.worker.pipeline.publish import dead_letter

__all__ = ["StreamProcessor"]

log = logging.getLogger(__name__)
_perf = time.perf_counter


class StreamProcessor:
    """Turns snapshot messages into predictions through a :class:`Pool`.

    Args:
        nc: connected NATS client used for publishing.
        engine: the live engine (model + per-symbol features).
        metrics: the process's metric set.
        shards, queue_max, batch_max, batch_wait_s: see :class:`Pool`.
        max_payload: larger payloads are dead-lettered as ``payload_too_large``.

    The intake adapter may set these hooks (JetStream does; core mode needs none): ``settle`` after a
    batch is published, ``on_dead`` after a message is dead-lettered, ``on_publish_failed`` when output
    could not be published, ``message_id`` for the ``Nats-Msg-Id`` of each prediction, and ``publish``
    to replace how a batch's encoded predictions are sent (it raises when they could not be).
    """

    def __init__(
        self,
        nc: Client,
        engine: Engine,
        metrics: Metrics,
        *,
        shards: int = 4,
        queue_max: int = 4096,
        batch_max: int = 256,
        batch_wait_s: float = 0.0,
        max_payload: int = 64 * 1024,
    ) -> None:
        self.nc = nc
        self.engine = engine
        self.metrics = metrics
        self.max_payload = max_payload
        self._parser = SnapshotParser(max_payload)
        self.settle: Callable[[Sequence[Snapshot], Sequence[Snapshot]], Awaitable[None]] | None = None
        self.on_dead: Callable[[object], Awaitable[None]] | None = None
        self.on_publish_failed: Callable[[Sequence[Snapshot]], Awaitable[None]] | None = None
        self.message_id: Callable[[Snapshot], str | None] | None = None
        self.publish: Callable[[Sequence[Snapshot], list[bytes]], Awaitable[None]] = self._publish_core
        self.observers: list[Callable[[BatchResult], None]] = []
        """Called with every published batch (shadow scoring, drift); must not block."""
        self.pool: Pool[Snapshot] = Pool(
            self.handle_batch,
            shards=shards,
            queue_max=queue_max,
            batch_max=batch_max,
            batch_wait_s=batch_wait_s,
            on_error=self._on_pool_error,
        )
        self.published = 0
        self.dead_lettered = 0
        self.dropped = 0
        """Core mode: snapshots that arrived after shutdown closed the pool."""

    def start(self) -> None:
        self.pool.start()

    async def close(self, timeout: float) -> int:
        return await self.pool.close(timeout)

    def _on_pool_error(self, exc: BaseException) -> None:
        self.metrics.model_errors.labels("batch_failure").inc()

    async def on_msg(self, msg: Msg) -> None:
        """JetStream (and plain callback) intake: validate, then queue on the symbol's shard, waiting for room."""
        recv = _perf()
        raw = msg.data
        subject = msg.subject
        try:
            content_type = msg.headers.get("Content-Type") if msg.headers else None
            snap = self._validate(raw, subject, content_type, recv, msg)
        except InvalidInput as exc:
            self.metrics.snapshots_received.inc()
            await self.reject(raw, subject, exc, ctx=msg)
            return
        await self.pool.submit(snap.symbol, snap)

    async def on_raw(self, subject: str, raw: bytes, content_type: str | None) -> None:
        """Core intake (see :mod:`spark_ml.worker.natsio.directsub`): validate and queue, waiting while the shard is
        full.

        Waiting here pauses the client's reader, so a burst backs up into the socket and the server's
        per-client buffer instead of being dropped (measured: 10x bursts of 200k absorbed, 0 lost). A
        backlog beyond the server's buffer makes it cut the connection: ``ml_nats_reconnects_total``.
        """
        wait = self._take(subject, raw, content_type)
        if wait is not None:
            await wait

    def on_raw_sync(self, subject: bytes, raw: bytes) -> Awaitable[None] | None:
        """:meth:`on_raw` for messages without headers, called synchronously by the protocol parser.

        Returns None when the snapshot is queued; else an awaitable the parser awaits (a dead letter to
        send, or room to wait for), so the common case costs no coroutine.
        """
        return self._take(subject.decode(), raw, None)

    def _take(self, subject: str, raw: bytes, content_type: str | None) -> Awaitable[None] | None:
        recv = _perf()
        try:
            snap = self._validate(raw, subject, content_type, recv, None)
        except InvalidInput as exc:
            self.metrics.snapshots_received.inc()
            return self.reject(raw, subject, exc)
        if self.pool.offer(snap.symbol, snap):
            return None
        return self._wait_for_room(snap)

    async def _wait_for_room(self, snap: Snapshot) -> None:
        try:
            await self.pool.submit(snap.symbol, snap)
        except RuntimeError:  # the pool is closing: shutdown has begun, the snapshot cannot be handled
            self.dropped += 1
            self.metrics.slow_consumer_drops.inc()

    def _validate(self, raw: bytes, subject: str, content_type: str | None, recv: float, ctx: object) -> Snapshot:
        return self._parser.parse(raw, subject, content_type, recv, ctx)

    async def reject(self, raw: bytes, subject: str, exc: SparkMlError, *, ctx: object = None) -> None:
        """Count a refused message and dead-letter it unchanged."""
        version = self.engine.model.version
        if isinstance(exc, InvalidInput):
            self.metrics.invalid("invalid_input", version)
        else:
            self.metrics.predict_requests.labels(version, Status.ERROR).inc()
            self.metrics.model_errors.labels(exc.code).inc()
        self.metrics.dead_letters.labels(exc.code).inc()
        self.dead_lettered += 1
        seq = _stream_seq(ctx)
        try:
            await dead_letter(self.nc, raw, reason=exc.code, message=exc.message, subject=subject, stream_seq=seq)
        except Exception:
            self.metrics.model_errors.labels("publish_error").inc()
            log.exception("could not dead-letter a message from %s", subject)
            raise
        if self.on_dead is not None:
            await self.on_dead(ctx)

    async def handle_batch(self, shard: int, batch: list[Snapshot]) -> None:
        """Score one batch with one model version and publish every outcome."""
        metrics = self.metrics
        n_in = len(batch)
        metrics.snapshots_received.inc(n_in)
        metrics.batch_size.observe(n_in)
        result = self.engine.run_batch(batch)
        rejected = result.rejected
        n_ok = len(result.snaps)
        unordered = sum(1 for _, e in rejected if e.code == "out_of_order") if rejected else 0
        metrics.feature_extractions.inc(n_in - unordered)
        if n_ok:
            payloads = result.encode(_perf())
            try:
                await self.publish(result.snaps, payloads)
            except Exception:
                metrics.model_errors.labels("publish_error").inc()
                log.exception("publishing %d predictions failed", n_ok)
                if self.on_publish_failed is not None:
                    await self.on_publish_failed(result.snaps)
                # The batch's refused rows are still dead-lettered (and, in JetStream mode, terminated):
                # left alone they would wait out the ack wait and come back to fail the same way.
                await self._reject_all(rejected)
                return
            self.published += n_ok
            for observe in self.observers:
                try:
                    observe(result)
                except Exception:
                    log.exception("batch observer failed")
            ok, latency = metrics.for_version(result.model_version)
            ok.inc(n_ok)
            latency.observe_many(result.latencies_ms)
            metrics.prediction_score.observe_many(result.scores)
        await self._reject_all(rejected)
        if self.settle is not None:
            await self.settle(result.snaps, [s for s, _ in rejected])

    async def _reject_all(self, rejected: Sequence[tuple[Snapshot, SparkMlError]]) -> None:
        for snap, exc in rejected:
            await self.reject(snap.raw, snap.subject, exc, ctx=snap.ctx)

    async def _publish_core(self, snaps: Sequence[Snapshot], payloads: list[bytes]) -> None:
        """Hand the batch to the connection (one write); ``message_id`` adds a ``Nats-Msg-Id`` per prediction."""
        if self.message_id is None:
            await publish_batch(self.nc, subjects.PREDICTION, payloads)
        else:
            ids = [self.message_id(snap) for snap in snaps]
            await publish_batch(self.nc, subjects.PREDICTION, payloads, ids)

    def model_changed(self) -> None:
        self.metrics.set_model_version(self.engine.model.version)


def _stream_seq(ctx: object) -> int | None:
    """The JetStream stream sequence of a message, or None for core NATS messages."""
    if isinstance(ctx, Msg) and ctx.reply and ctx.reply.startswith("$JS.ACK."):
        return int(ctx.metadata.sequence.stream)
    return None

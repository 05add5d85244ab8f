"""The stream handler: NATS message -> snapshot -> shard -> batch -> predictions / dead letters.

Intake (the NATS callback) only decodes and validates, so refused payloads are dead-lettered at once and
good ones reach their shard quickly; everything else happens a batch at a time in :meth:`handle_batch`.
Where the output goes and how the input is settled are the intake's (:mod:`spark_ml.worker.intake.base`),
given to the processor when it is built.

Trace context: a snapshot whose headers hold a well-formed W3C ``traceparent`` keeps it (:attr:`Snapshot.trace`),
and its prediction (and dead letter) carries it on: unchanged with tracing off, through the batch's span with it
on (:mod:`spark_ml.worker.tracing`). Snapshots without headers take the same path as before: a count of traced
snapshots not yet scored (``StreamProcessor._traced``) keeps a batch from looking for traces when none came.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from spark_ml.core.codec import Encoding, OutputEncoding, Snapshot, SnapshotParser, detect_encoding
from spark_ml.core.engine import BatchResult, Engine
from spark_ml.core.errors import InvalidInput, SparkMlError
from spark_ml.core.outcomes import outcome_of
from spark_ml.core.tracecontext import TRACEPARENT, clean_traceparent
from spark_ml.worker.intake.base import AtMostOnce, Delivery, Output, Settlement
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsio.writer import Heads
from spark_ml.worker.pipeline.deadletter import DeadLetter
from spark_ml.worker.pipeline.pool import Pool
from spark_ml.worker.pipeline.publish import heads_of, traced_heads

if TYPE_CHECKING:  # imported only when tracing is on: the SDK is an optional dependency
    from opentelemetry.trace import Span

    from spark_ml.worker.tracing import Tracing

__all__ = ["StreamProcessor"]

log = logging.getLogger(__name__)
_perf = time.perf_counter


class StreamProcessor:
    """Turns snapshot messages into predictions through a :class:`Pool`.

    Args:
        engine: the live engine (model + per-symbol features).
        metrics: the process's metric set.
        output: where a batch's encoded predictions and each dead letter go (the intake's ``output``).
        settlement: what the source is told after each outcome (the intake's ``settlement``); the default
            settles nothing (core NATS, at-most-once).
        observers: called with every published batch (shadow scoring, drift); they must not block.
        shards, queue_max, batch_max, batch_wait_s: see :class:`Pool`.
        max_payload: larger payloads are dead-lettered as ``payload_too_large``.
        output_encoding: the predictions' encoding (``auto``: each in its snapshot's).
        tracing: spans per batch and per dead letter (None: tracing off).

    When a shard's queue is full, intake waits for room; it does not drop (see :meth:`on_raw`).
    """

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        output: Output,
        *,
        settlement: Settlement | None = None,
        observers: Sequence[Callable[[BatchResult], None]] = (),
        shards: int = 4,
        queue_max: int = 4096,
        batch_max: int = 256,
        batch_wait_s: float = 0.0,
        max_payload: int = 64 * 1024,
        output_encoding: OutputEncoding = "auto",
        tracing: Tracing | None = None,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_payload = max_payload
        self._output_encoding: Encoding | None = None if output_encoding == "auto" else output_encoding
        self._tracing = tracing
        self._traced = 0
        """Snapshots taken in with a ``traceparent`` and not yet met in a batch (0: no batch looks for any)."""
        self._parser = SnapshotParser(max_payload)
        self._output = output
        self._settlement: Settlement = settlement if settlement is not None else AtMostOnce()
        self._observers = tuple(observers)
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

    async def on_msg(self, msg: Delivery) -> None:
        """Intake of messages to settle (JetStream, in-memory): validate, then queue on the symbol's shard,
        waiting for room; raises RuntimeError once the pool is closing (the intake gives the message back)."""
        recv = _perf()
        raw = msg.data
        subject = msg.subject
        headers = msg.headers
        content_type = headers.get("Content-Type") if headers else None
        try:
            snap = self._validate(raw, subject, content_type, recv, msg)
        except InvalidInput as exc:
            self.metrics.snapshots_received.inc()
            enc = detect_encoding(raw, content_type)
            await self.reject(raw, subject, exc, ctx=msg, encoding=enc, trace=_trace_of(headers))
            return
        if headers:
            self._keep_trace(snap, headers)
        await self.pool.submit(snap.symbol, snap)

    async def on_raw(self, subject: str, raw: bytes, headers: dict[str, str] | None) -> None:
        """Core intake (see :mod:`spark_ml.worker.natsio.directsub`): validate and queue, waiting while the shard is
        full; nothing is dropped here.

        On the direct route the protocol parser awaits this, so waiting pauses the client's reader: a burst
        backs up into the socket and the server's per-client buffer instead of being dropped (measured: 10x
        bursts of 200k absorbed, 0 lost). A backlog beyond the server's buffer makes it cut the connection
        (``ml_nats_reconnects_total``). On nats-py's plain callback route (its internals changed) the
        subscription's task waits instead, and the client reads on into the subscription's pending buffer up
        to its limits; beyond them nats-py drops and reports a slow consumer (``ml_slow_consumer_drops_total``).
        Only once shutdown has closed the pool is a snapshot dropped, and counted (:attr:`dropped`).
        """
        wait = self._take(subject, raw, headers)
        if wait is not None:
            await wait

    def on_raw_sync(self, subject: bytes, raw: bytes, headers: dict[str, str] | None = None) -> Awaitable[None] | None:
        """:meth:`on_raw`, called synchronously by the protocol parser (for messages without headers or with a
        common header block, parsed by the parser).

        Returns None when the snapshot is queued; else an awaitable the parser awaits (a dead letter to
        send, or room to wait for), so the common case costs no coroutine.
        """
        return self._take(subject.decode(), raw, headers)

    def _take(self, subject: str, raw: bytes, headers: dict[str, str] | None) -> Awaitable[None] | None:
        recv = _perf()
        content_type = headers.get("Content-Type") if headers else None
        try:
            snap = self._validate(raw, subject, content_type, recv, None)
        except InvalidInput as exc:
            self.metrics.snapshots_received.inc()
            return self.reject(raw, subject, exc, encoding=detect_encoding(raw, content_type), trace=_trace_of(headers))
        if headers:
            self._keep_trace(snap, headers)
        if self.pool.offer(snap.symbol, snap):
            return None
        return self._wait_for_room(snap)

    async def _wait_for_room(self, snap: Snapshot) -> None:
        try:
            await self.pool.submit(snap.symbol, snap)
        except RuntimeError:  # the pool is closing: shutdown has begun, the snapshot cannot be handled
            self.dropped += 1
            self.metrics.slow_consumer_drops.inc()

    def _keep_trace(self, snap: Snapshot, headers: dict[str, str]) -> None:
        trace = _trace_of(headers)
        if trace is not None:
            snap.trace = trace
            self._traced += 1

    def _validate(self, raw: bytes, subject: str, content_type: str | None, recv: float, ctx: object) -> Snapshot:
        return self._parser.parse(raw, subject, content_type, recv, ctx)

    async def reject(
        self,
        raw: bytes,
        subject: str,
        exc: SparkMlError,
        *,
        ctx: object = None,
        encoding: Encoding | None = None,
        trace: str | None = None,
    ) -> None:
        """Count a refused message and dead-letter it unchanged (``encoding``: what it was read as; ``trace``:
        its ``traceparent``, continued by a span of its own when tracing is on)."""
        outcome = outcome_of(exc)
        self.metrics.refused(outcome, self.engine.model.version)
        self.metrics.dead_letters.labels(outcome.code).inc()
        self.dead_lettered += 1
        if self._tracing is not None:
            trace = self._tracing.dead_letter(trace, outcome.code, subject)
        letter = DeadLetter(
            raw,
            reason=outcome.code,
            message=outcome.message,
            subject=subject,
            stream_seq=_stream_seq(ctx),
            encoding=encoding,
            trace=trace,
        )
        try:
            await self._output.dead_letter(letter)
        except Exception:
            self.metrics.model_errors.labels("publish_error").inc()
            log.exception("could not dead-letter a message from %s", subject)
            raise
        await self._settlement.on_dead(ctx)

    async def handle_batch(self, shard: int, batch: list[Snapshot]) -> None:
        """Score one batch with one model version and publish every outcome (in a span when tracing is on)."""
        traced = 0
        if self._traced:
            traced = sum(1 for s in batch if s.trace is not None)
            self._traced = max(0, self._traced - traced)
        tracing = self._tracing
        if tracing is None:
            await self._handle(batch, traced, None)
            return
        span = tracing.batch_span(batch, traced, self.engine.model.version)
        try:
            await self._handle(batch, traced, span)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            span.end()

    async def _handle(self, batch: list[Snapshot], traced: int, span: Span | None) -> None:
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
            payloads = result.encode(_perf(), self._output_encoding)
            heads: Heads
            tracing = self._tracing
            if span is not None and tracing is not None:
                heads = traced_heads(result.encodings, tracing.outgoing(span, result.snaps))
            elif traced:
                heads = traced_heads(result.encodings, [s.trace for s in result.snaps])
            else:
                heads = heads_of(result.encodings)
            try:
                await self._output.publish(result.snaps, payloads, heads)
            except Exception:
                metrics.model_errors.labels("publish_error").inc()
                log.exception("publishing %d predictions failed", n_ok)
                await self._settlement.on_publish_failed(result.snaps)
                # The batch's refused rows are still dead-lettered (and, in JetStream mode, terminated):
                # left alone they would wait out the ack wait and come back to fail the same way.
                await self._reject_all(rejected)
                return
            self.published += n_ok
            for observe in self._observers:
                try:
                    observe(result)
                except Exception:
                    log.exception("batch observer failed")
            ok, latency = metrics.for_version(result.model_version)
            ok.inc(n_ok)
            latency.observe_many(result.latencies_ms)
            metrics.prediction_score.observe_many(result.scores)
        await self._reject_all(rejected)
        await self._settlement.settle(result.snaps)

    async def _reject_all(self, rejected: Sequence[tuple[Snapshot, SparkMlError]]) -> None:
        for snap, exc in rejected:
            await self.reject(snap.raw, snap.subject, exc, ctx=snap.ctx, encoding=snap.encoding, trace=snap.trace)


def _stream_seq(ctx: object) -> int | None:
    """The stream sequence of a :class:`Delivery` (JetStream's, or the in-memory intake's); None for core NATS."""
    seq = getattr(ctx, "seq", None)
    return seq if isinstance(seq, int) else None


def _trace_of(headers: dict[str, str] | None) -> str | None:
    """A well-formed ``traceparent`` from a message's headers, else None."""
    return clean_traceparent(headers.get(TRACEPARENT)) if headers else None

"""Publishing a batch of predictions into a JetStream stream and learning, per batch, whether it was stored.

A core publish tells the worker nothing about a stream over ``ml.prediction``: full with ``discard:
new``, without a leader, over quota, it drops the prediction while the input gets acked. Here every
prediction of a batch goes out with its own reply subject (``<inbox>.<batch>.<index>``), all of them in
one write, and the batch waits for every PubAck at once: one round trip per batch, not one per message.
A PubAck with an error, a "no responders" status (no stream on the subject) or a missing PubAck at the
timeout makes :meth:`AckedPublisher.publish` raise :class:`NotStored`, which says which messages were
stored; the caller acks the inputs of those and naks the others.

Predictions carry ``Nats-Msg-Id`` as before, so a republished prediction (the input was redelivered
after a partial failure) is acknowledged by the stream as a duplicate and stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from nats import errors
from nats.aio.client import Client
from nats.aio.subscription import Subscription

from spark_ml.core.errors import NotStored
from spark_ml.worker.natsio import writer
from spark_ml.worker.natsio.batchpub import slow_headers
from spark_ml.worker.natsio.jsroute import subscribe_raw, unroute
from spark_ml.worker.natsio.jswire import status_of

__all__ = ["AckedPublisher", "NotStored"]

log = logging.getLogger(__name__)


_PENDING, _STORED, _REFUSED = 0, 1, 2


class _Batch:
    __slots__ = ("done", "reason", "remaining", "states")

    def __init__(self, n: int) -> None:
        self.states = bytearray(n)
        self.remaining = n
        self.reason = ""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class AckedPublisher:
    """Publishes batches to ``subject`` through JetStream, one write and one round trip per batch.

    Args:
        nc: the connection.
        subject: where the predictions go (a stream must capture it).
        timeout_s: how long a batch waits for its PubAcks.
    """

    def __init__(self, nc: Client, subject: str, *, timeout_s: float) -> None:
        self.nc = nc
        self.subject = subject
        self.timeout_s = timeout_s
        self._batches: dict[int, _Batch] = {}
        self._next = 0
        self._inbox = b""
        self._sub: Subscription | None = None
        self._raw = writer.can_write_raw(nc)
        self.stored = 0
        self.refused = 0

    async def start(self) -> None:
        inbox = self.nc.new_inbox()
        self._inbox = inbox.encode()
        self._sub, _ = await subscribe_raw(self.nc, f"{inbox}.*.*", self._on_reply)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            unroute(self.nc, sub)
        for batch in self._batches.values():
            if not batch.done.done():
                batch.done.set_result(None)

    async def publish(
        self, payloads: Sequence[bytes], msg_ids: Sequence[str | None], heads: writer.Heads | None = None
    ) -> None:
        """Publish the batch (each message with its header block from ``heads``, see
        :func:`~spark_ml.worker.natsio.writer.head`) and return once the stream stored every message;
        :class:`NotStored` otherwise."""
        n = len(payloads)
        if not n:
            return
        if self._sub is None:
            raise errors.ConnectionClosedError
        self._next += 1
        bid = self._next
        reply = self._inbox + b".%d." % bid
        batch = self._batches[bid] = _Batch(n)
        try:
            await self._send(reply, payloads, msg_ids, heads)
            try:
                async with asyncio.timeout(self.timeout_s):
                    await batch.done
            except TimeoutError:
                batch.reason = batch.reason or f"no PubAck within {self.timeout_s:g}s"
        finally:
            self._batches.pop(bid, None)
        stored = [state == _STORED for state in batch.states]
        n_stored = sum(stored)
        self.stored += n_stored
        if n_stored < n:
            self.refused += n - n_stored
            raise NotStored(stored, batch.reason)

    async def _send(
        self, reply: bytes, payloads: Sequence[bytes], msg_ids: Sequence[str | None], heads: writer.Heads | None
    ) -> None:
        nc = self.nc
        if not self._raw:
            rs = reply.decode()
            for i, p in enumerate(payloads):
                await nc.publish(self.subject, p, reply=f"{rs}{i}", headers=slow_headers(i, msg_ids, heads))
            return
        total = writer.checked_size(nc, self.subject, payloads, msg_ids, heads)
        data = writer.pub_frames(self.subject.encode(), payloads, msg_ids, reply, heads)
        await writer.write_raw(nc, data, len(payloads), total)

    async def _on_reply(self, subject: bytes, _: bytes, data: bytes, headers: dict[str, str] | None) -> None:
        try:
            bid_b, index_b = subject[len(self._inbox) + 1 :].split(b".")
            bid, index = int(bid_b), int(index_b)
        except ValueError:
            return
        batch = self._batches.get(bid)
        if batch is None or not 0 <= index < len(batch.states) or batch.states[index]:
            return  # late (the batch timed out), or not ours
        if not data or b'"error"' in data:
            batch.states[index] = _REFUSED
            if not batch.reason:
                batch.reason = _reason(data, headers)
        else:
            batch.states[index] = _STORED
        batch.remaining -= 1
        if batch.remaining <= 0 and not batch.done.done():
            batch.done.set_result(None)


def _reason(data: bytes, headers: dict[str, str] | None) -> str:
    status = status_of(data, headers)
    if status is not None:
        return f"{status.code} {status.description}".strip()
    text = data.decode(errors="replace")
    marker = '"description":"'
    i = text.find(marker)
    if i >= 0:
        return text[i + len(marker) :].split('"', 1)[0]
    return text[:200] or "empty reply"

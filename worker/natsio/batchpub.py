"""Publishing a whole batch of predictions as one write to the NATS client's outgoing buffer.

``Client.publish`` validates the subject, builds a PUB line and queues it, about 3 us per message; a
batch of 256 predictions to one subject needs those checks once. :func:`publish_batch` makes the
``PUB``/``HPUB`` frames of the batch and hands them to the client in one call through
:mod:`spark_ml.worker.natsio.writer`, with the same refusals as ``Client.publish`` (closed, draining,
bad subject, payload too large, buffer full while reconnecting).

A client without the internals the writer relies on gets plain ``publish`` calls, so a nats-py release
that changes them degrades to the slow path, never to lost messages. ``tests/worker/test_batchpub.py``
holds both paths to ``Client.publish`` on a real server.
"""

from __future__ import annotations

from collections.abc import Sequence

from nats.aio.client import Client

from spark_ml.worker.natsio import writer

__all__ = ["publish_batch", "slow_headers"]


async def publish_batch(
    nc: Client,
    subject: str,
    payloads: Sequence[bytes],
    msg_ids: Sequence[str | None] | None = None,
    heads: writer.Heads | None = None,
) -> None:
    """Publish every payload to ``subject`` in order, with its header block (``heads``: one for all, or one per
    payload, from :func:`~spark_ml.worker.natsio.writer.head`); raises what ``Client.publish`` would raise."""
    if not payloads:
        return
    if not writer.can_write_raw(nc):
        for i, p in enumerate(payloads):
            await nc.publish(subject, p, headers=slow_headers(i, msg_ids, heads))
        return
    total = writer.checked_size(nc, subject, payloads, msg_ids, heads)
    frames = writer.pub_frames(subject.encode(), payloads, msg_ids, heads=heads)
    await writer.write_raw(nc, frames, len(payloads), total)


def slow_headers(i: int, msg_ids: Sequence[str | None] | None, heads: writer.Heads | None) -> dict[str, str] | None:
    """Message ``i``'s headers as a dict, for ``Client.publish`` (the path without the writer)."""
    headers: dict[str, str] = {}
    if heads is not None:
        headers.update(writer.head_dict(heads if isinstance(heads, bytes) else heads[i]))
    mid = msg_ids[i] if msg_ids is not None else None
    if mid:
        headers["Nats-Msg-Id"] = mid
    return headers or None

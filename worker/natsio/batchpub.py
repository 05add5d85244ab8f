"""Publishing a whole batch of predictions as one write to the NATS client's outgoing buffer.

``Client.publish`` validates the subject, builds a PUB line and queues it, about 3 us per message; a
batch of 256 predictions to one subject needs those checks once. This module builds the ``PUB``/``HPUB``
frames of a batch itself and hands them to the client's outgoing buffer in one call, through the
same internal steps ``Client.publish`` takes (nats-py 2.x: ``_send_command`` and ``_flush_pending``),
with the same refusals (closed, draining, payload too large, buffer full while reconnecting).

The internals are checked once per client (:func:`supported`); any client without them gets plain
``publish`` calls, so a nats-py release that changes them degrades to the slow path, never to lost
messages. ``tests/worker/test_batchpub.py`` holds both paths to ``Client.publish`` on a real server.
"""

from __future__ import annotations

from collections.abc import Sequence

from nats import errors
from nats.aio.client import Client

__all__ = ["frames", "publish_batch", "supported"]

_INTERNALS = (
    "_send_command",
    "_flush_pending",
    "_flush_queue",
    "_max_payload",
    "_max_pending_size",
    "_pending_data_size",
    "stats",
)
_CHECKED = "_spark_ml_batchpub_ok"
_CRLF = b"\r\n"
_HDR_ID = b"NATS/1.0\r\nNats-Msg-Id: "
_HDR_END = b"\r\n\r\n"


def supported(nc: Client) -> bool:
    """Whether ``nc`` has the internals the one-write path relies on (checked once per client)."""
    known: bool | None = getattr(nc, _CHECKED, None)
    if known is None:
        known = all(hasattr(nc, name) for name in _INTERNALS) and isinstance(getattr(nc, "stats", None), dict)
        setattr(nc, _CHECKED, known)
    return known


def frames(subject: str, payloads: Sequence[bytes], msg_ids: Sequence[str | None] | None = None) -> bytes:
    """The wire frames publishing ``payloads`` to ``subject`` (``HPUB`` with ``Nats-Msg-Id`` where given)."""
    subj = subject.encode()
    pub = b"PUB " + subj + b" "
    parts: list[bytes] = []
    add = parts.extend
    if msg_ids is None:
        for p in payloads:
            add((pub, b"%d\r\n" % len(p), p, _CRLF))
        return b"".join(parts)
    hpub = b"HPUB " + subj + b" "
    for p, mid in zip(payloads, msg_ids, strict=True):
        if mid is None:
            add((pub, b"%d\r\n" % len(p), p, _CRLF))
            continue
        hdr = _HDR_ID + _header_value(mid) + _HDR_END
        add((hpub, b"%d %d\r\n" % (len(hdr), len(hdr) + len(p)), hdr, p, _CRLF))
    return b"".join(parts)


def _header_value(value: str) -> bytes:
    # As Client.publish does: strip, and no line breaks inside a header value.
    return value.strip().replace("\r", "").replace("\n", "").encode()


async def publish_batch(
    nc: Client, subject: str, payloads: Sequence[bytes], msg_ids: Sequence[str | None] | None = None
) -> None:
    """Publish every payload to ``subject`` in order; raises what ``Client.publish`` would raise."""
    if not payloads:
        return
    if not supported(nc):
        for i, p in enumerate(payloads):
            mid = msg_ids[i] if msg_ids is not None else None
            await nc.publish(subject, p, headers={"Nats-Msg-Id": mid} if mid else None)
        return
    if nc.is_closed:
        raise errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise errors.ConnectionDrainingError
    if not subject or " " in subject or "\t" in subject:
        raise errors.BadSubjectError
    total = 0
    limit = nc._max_payload
    for p in payloads:
        n = len(p)
        if n > limit:
            raise errors.MaxPayloadError
        total += n
    data = frames(subject, payloads, msg_ids)
    if not nc.is_connected:
        max_pending = nc._max_pending_size
        if max_pending <= 0 or len(data) + nc._pending_data_size > max_pending:
            raise errors.OutboundBufferLimitError
    nc.stats["out_msgs"] += len(payloads)
    nc.stats["out_bytes"] += total
    await nc._send_command(data)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()

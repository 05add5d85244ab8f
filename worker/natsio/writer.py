"""The one frame writer: ready-made ``PUB``/``HPUB`` frames handed to a client's outgoing buffer in one call.

``Client.publish`` validates the subject, builds a PUB line and queues it, about 3 us per message; a batch
of 256 predictions, or of 256 acks, needs those checks once. This module builds the frames of a whole batch
(:func:`pub_frames` for payloads, optionally with ``Nats-Msg-Id`` headers and per-message reply subjects;
:func:`ack_frames` for one body sent to many subjects) and :func:`write_raw` queues them through the same
internal steps ``Client.publish`` takes (``_send_command``, then ``_flush_pending`` to wake the flusher),
after the same refusals (:func:`checked_size`: closed, draining, bad subject, payload too large; buffer full
while reconnecting).

:func:`can_write_raw` checks the internals once per client (see :mod:`spark_ml.worker.natsio`); callers publish
one message at a time through ``Client.publish`` when it is false, so a nats-py release that changes them
costs speed, never messages.
"""

from __future__ import annotations

from collections.abc import Sequence

from nats import errors
from nats.aio.client import Client

__all__ = ["INTERNALS", "ack_frames", "can_write_raw", "checked_size", "pub_frames", "write_raw"]

INTERNALS = (
    "_send_command",
    "_flush_pending",
    "_flush_queue",
    "_max_payload",
    "_max_pending_size",
    "_pending_data_size",
    "stats",
)
"""The client attributes :func:`write_raw` and :func:`checked_size` use."""

_CHECKED = "_spark_ml_writer_ok"
_CRLF = b"\r\n"
_HDR_ID = b"NATS/1.0\r\nNats-Msg-Id: "
_HDR_END = b"\r\n\r\n"
_HDR_SIZE = len(_HDR_ID) + len(_HDR_END)


def can_write_raw(nc: Client) -> bool:
    """Whether ``nc`` has the internals :func:`write_raw` relies on (checked once per client)."""
    known: bool | None = getattr(nc, _CHECKED, None)
    if known is None:
        known = all(hasattr(nc, name) for name in INTERNALS) and isinstance(getattr(nc, "stats", None), dict)
        setattr(nc, _CHECKED, known)
    return known


def checked_size(
    nc: Client, subject: str, payloads: Sequence[bytes], msg_ids: Sequence[str | None] | None = None
) -> int:
    """The payloads' total size, after refusing what ``Client.publish`` refuses, in its order.

    A frame the server would refuse is never written: it closes the connection for it (``maximum payload
    exceeded``). With ``msg_ids``, each ``HPUB``'s header block counts against the limit too (``Client.publish``
    checks the payload alone).
    """
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
    if msg_ids is not None:
        for p, mid in zip(payloads, msg_ids, strict=True):
            # An upper bound of the header block pub_frames writes (it strips the id and drops line breaks).
            if mid is not None and len(p) + _HDR_SIZE + len(mid.encode()) > limit:
                raise errors.MaxPayloadError
    return total


def pub_frames(
    subject: bytes, payloads: Sequence[bytes], msg_ids: Sequence[str | None] | None = None, reply: bytes = b""
) -> bytes:
    """Frames publishing ``payloads`` to ``subject``: ``HPUB`` with ``Nats-Msg-Id`` where an id is given.

    With ``reply`` (ending in ``.``), message ``i`` asks for its answer on ``reply + b"<i>"``. Ids are written
    as ``Client.publish`` writes header values: stripped, with no line breaks inside.
    """
    pub = b"PUB " + subject + b" " + reply
    hpub = b"HPUB " + subject + b" " + reply
    parts: list[bytes] = []
    add = parts.extend
    if reply:  # each message's index completes the reply subject
        for i, (p, mid) in enumerate(zip(payloads, msg_ids or [None] * len(payloads), strict=True)):
            if mid is None:
                add((pub, b"%d %d\r\n" % (i, len(p)), p, _CRLF))
            else:
                hdr = _HDR_ID + mid.strip().replace("\r", "").replace("\n", "").encode() + _HDR_END
                add((hpub, b"%d %d %d\r\n" % (i, len(hdr), len(hdr) + len(p)), hdr, p, _CRLF))
    elif msg_ids is None:  # the core stream's predictions: nothing per message but the size
        for p in payloads:
            add((pub, b"%d\r\n" % len(p), p, _CRLF))
    else:
        for p, mid in zip(payloads, msg_ids, strict=True):
            if mid is None:
                add((pub, b"%d\r\n" % len(p), p, _CRLF))
            else:
                hdr = _HDR_ID + mid.strip().replace("\r", "").replace("\n", "").encode() + _HDR_END
                add((hpub, b"%d %d\r\n" % (len(hdr), len(hdr) + len(p)), hdr, p, _CRLF))
    return b"".join(parts)


def ack_frames(subjects: Sequence[bytes], body: bytes) -> bytes:
    """``PUB <subject> <n>`` frames sending the same ``body`` to every subject (a batch of acks)."""
    tail = b" %d\r\n" % len(body) + body + _CRLF
    return b"".join([b"PUB " + s + tail for s in subjects])


async def write_raw(nc: Client, data: bytes, count: int, payload_bytes: int) -> None:
    """Hand ``data`` (``count`` ready-made frames) to the client in one call; raises what ``publish`` would.

    Only for clients where :func:`can_write_raw` holds; the caller checked the payloads (:func:`checked_size`).
    """
    if nc.is_closed:
        raise errors.ConnectionClosedError
    if not nc.is_connected:
        max_pending = nc._max_pending_size
        if max_pending <= 0 or len(data) + nc._pending_data_size > max_pending:
            raise errors.OutboundBufferLimitError
    nc.stats["out_msgs"] += count
    nc.stats["out_bytes"] += payload_bytes
    await nc._send_command(data)
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()

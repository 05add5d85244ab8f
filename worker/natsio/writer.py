"""The one frame writer: ready-made ``PUB``/``HPUB`` frames handed to a client's outgoing buffer in one call.

``Client.publish`` validates the subject, builds a PUB line and queues it, about 3 us per message; a batch
of 256 predictions, or of 256 acks, needs those checks once. This module builds the frames of a whole batch
(:func:`pub_frames` for payloads, with header blocks made beforehand (:func:`head`: one shared by the batch, or
one per message), optionally ``Nats-Msg-Id`` headers and per-message reply subjects; :func:`ack_frames` for one
body sent to many subjects) and :func:`write_raw` queues them through the same
internal steps ``Client.publish`` takes (``_send_command``, then ``_flush_pending`` to wake the flusher),
after the same refusals (:func:`checked_size`: closed, draining, bad subject, payload too large; buffer full
while reconnecting).

:func:`can_write_raw` checks the internals once per client (see :mod:`spark_ml.worker.natsio`); callers publish
one message at a time through ``Client.publish`` when it is false, so a nats-py release that changes them
costs speed, never messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nats import errors
from nats.aio.client import Client

__all__ = [
    "INTERNALS",
    "Heads",
    "ack_frames",
    "can_write_raw",
    "checked_size",
    "head",
    "head_dict",
    "pub_frames",
    "write_raw",
]

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
_HDR_LINE = b"NATS/1.0\r\n"
_ID = b"Nats-Msg-Id: "
_HDR_ID = _HDR_LINE + _ID
_HDR_END = b"\r\n\r\n"
_HDR_SIZE = len(_HDR_ID) + len(_HDR_END)

Heads = bytes | Sequence[bytes]
"""The header blocks of a batch (each from :func:`head`): one for every message, or one per message."""


def head(headers: Mapping[str, str]) -> bytes:
    """A header block without its closing blank line (``NATS/1.0``, then ``Name: value`` lines), as
    ``Client.publish`` writes it: names and values stripped, line breaks in values dropped. Made once and
    reused: the writer appends ``Nats-Msg-Id`` (when given) and the blank line."""
    lines = [_HDR_LINE]
    for name, value in headers.items():
        clean = value.strip().replace("\r", "").replace("\n", "")
        lines.append(name.strip().encode() + b": " + clean.encode() + _CRLF)
    return b"".join(lines)


def head_dict(block: bytes) -> dict[str, str]:
    """The headers of a block from :func:`head` (for ``Client.publish`` on the slow path)."""
    out: dict[str, str] = {}
    for line in block.decode().split("\r\n")[1:]:
        if line:
            name, _, value = line.partition(": ")
            out[name] = value
    return out


def can_write_raw(nc: Client) -> bool:
    """Whether ``nc`` has the internals :func:`write_raw` relies on (checked once per client)."""
    known: bool | None = getattr(nc, _CHECKED, None)
    if known is None:
        known = all(hasattr(nc, name) for name in INTERNALS) and isinstance(getattr(nc, "stats", None), dict)
        setattr(nc, _CHECKED, known)
    return known


def checked_size(
    nc: Client,
    subject: str,
    payloads: Sequence[bytes],
    msg_ids: Sequence[str | None] | None = None,
    heads: Heads | None = None,
) -> int:
    """The payloads' total size, after refusing what ``Client.publish`` refuses, in its order.

    A frame the server would refuse is never written: it closes the connection for it (``maximum payload
    exceeded``). With ``msg_ids`` or ``heads``, each ``HPUB``'s header block counts against the limit too
    (``Client.publish`` checks the payload alone).
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
    if msg_ids is None and heads is None:
        return total
    if heads is None or isinstance(heads, bytes):
        extra = len(heads) + 2 if heads is not None else 0
        if msg_ids is None:
            if total and max(len(p) for p in payloads) + extra > limit:
                raise errors.MaxPayloadError
            return total
        sizes: Sequence[int] = [extra] * len(payloads)
    else:
        sizes = [len(h) + 2 for h in heads]
    ids = msg_ids if msg_ids is not None else [None] * len(payloads)
    for p, mid, size in zip(payloads, ids, sizes, strict=True):
        # An upper bound of the header block pub_frames writes (it strips the id and drops line breaks).
        n = len(p) + size
        if mid is not None:
            n += _HDR_SIZE + len(mid.encode())
        if n > limit:
            raise errors.MaxPayloadError
    return total


def pub_frames(
    subject: bytes,
    payloads: Sequence[bytes],
    msg_ids: Sequence[str | None] | None = None,
    reply: bytes = b"",
    heads: Heads | None = None,
) -> bytes:
    """Frames publishing ``payloads`` to ``subject``: ``HPUB`` with the header block of each message (``heads``,
    from :func:`head`) and ``Nats-Msg-Id`` where an id is given; ``PUB`` for a message with neither.

    With ``reply`` (ending in ``.``), message ``i`` asks for its answer on ``reply + b"<i>"``. Ids are written
    as ``Client.publish`` writes header values: stripped, with no line breaks inside.
    """
    parts: list[bytes] = []
    add = parts.extend
    if msg_ids is None and not reply and heads is not None:
        if isinstance(heads, bytes):  # the core stream: one header block, nothing per message but the size
            block = heads + _CRLF
            n_head = len(block)
            pre = b"HPUB " + subject + b" %d " % n_head
            for p in payloads:
                add((pre, b"%d\r\n" % (n_head + len(p)), block, p, _CRLF))
            return b"".join(parts)
        hpub = b"HPUB " + subject + b" "
        for p, h in zip(payloads, heads, strict=True):
            n_head = len(h) + 2
            add((hpub, b"%d %d\r\n" % (n_head, n_head + len(p)), h, _CRLF, p, _CRLF))
        return b"".join(parts)
    pub = b"PUB " + subject + b" " + reply
    hpub = b"HPUB " + subject + b" " + reply
    if msg_ids is None and heads is None and not reply:
        for p in payloads:
            add((pub, b"%d\r\n" % len(p), p, _CRLF))
        return b"".join(parts)
    ids = msg_ids if msg_ids is not None else [None] * len(payloads)
    blocks: Sequence[bytes | None]
    blocks = [heads] * len(payloads) if heads is None or isinstance(heads, bytes) else heads
    for i, (p, mid, block_i) in enumerate(zip(payloads, ids, blocks, strict=True)):
        index = b"%d " % i if reply else b""
        if mid is None and block_i is None:
            add((pub, index, b"%d\r\n" % len(p), p, _CRLF))
            continue
        hdr = block_i if block_i is not None else _HDR_LINE
        if mid is not None:
            hdr += _ID + mid.strip().replace("\r", "").replace("\n", "").encode() + _CRLF
        hdr += _CRLF
        add((hpub, index, b"%d %d\r\n" % (len(hdr), len(hdr) + len(p)), hdr, p, _CRLF))
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

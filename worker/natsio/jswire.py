"""JetStream's wire vocabulary for our own pull consumer: ack subjects and bodies, status messages, pull requests.

A message delivered to a pull request carries its ack subject as the reply, in one of two layouts::

    $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>                     (9 tokens)
    $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<random>]

(11 or 12 tokens; nats-py's ``Msg.Metadata`` reads both the same way). The server ends or annotates a
pull request with a header-only status message: ``100`` idle heartbeat, ``404`` no messages, ``408``
request expired, ``409`` the request was refused or cut short (max waiting, leadership change, consumer
deleted, ...), ``423`` the request's pin id is not (or no longer) the pinned one. ``408`` and ``409``
say how much of the request was left unfilled in ``Nats-Pending-Messages``.

Batches of acks and of publishes with reply subjects reach the client in one write through
:mod:`spark_ml.worker.natsio.writer` (``ack_frames``, ``can_write_raw`` and ``write_raw`` are re-exported here).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from nats.js.api import Header

from spark_ml.worker.natsio.writer import ack_frames, can_write_raw, write_raw

__all__ = [
    "ACK",
    "NAK",
    "PIN_ID",
    "TERM",
    "AckInfo",
    "Status",
    "ack_frames",
    "can_write_raw",
    "nak_body",
    "next_request",
    "parse_ack",
    "status_of",
    "stream_seq",
    "write_raw",
]

ACK = b"+ACK"
NAK = b"-NAK"
TERM = b"+TERM"

_V1_TOKENS = 9
STATUS = "Status"
DESCRIPTION = "Description"
PENDING_MSGS = "Nats-Pending-Messages"
PIN_ID = "Nats-Pin-Id"
"""On every message of a consumer with a ``pinned_client`` priority group: the pin the delivery went to."""


class AckInfo(NamedTuple):
    """What an ack subject tells about its message."""

    stream: str
    consumer: str
    delivered: int
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int
    pending: int


def parse_ack(reply: str) -> AckInfo:
    """Parse ``$JS.ACK...`` in either layout; ValueError for anything else."""
    tokens = reply.split(".")
    n = len(tokens)
    if n < _V1_TOKENS or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    if n >= _V1_TOKENS + 2:  # domain and account hash after "$JS.ACK" (and maybe a random token at the end)
        tokens = tokens[:2] + tokens[4:]
    elif n != _V1_TOKENS:
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    return AckInfo(
        tokens[2],
        tokens[3],
        int(tokens[4]),
        int(tokens[5]),
        int(tokens[6]),
        int(tokens[7]),
        int(tokens[8]),
    )


def stream_seq(reply: str) -> int:
    """The stream sequence of an ack subject (the hot-path subset of :func:`parse_ack`)."""
    tokens = reply.split(".")
    n = len(tokens)
    if n == _V1_TOKENS:
        return int(tokens[5])
    if n >= _V1_TOKENS + 2 and tokens[0] == "$JS":
        return int(tokens[7])
    raise ValueError(f"not a JetStream ack subject: {reply!r}")


class Status(NamedTuple):
    """A header-only status message from the server."""

    code: int
    description: str
    pending_msgs: int | None
    """For 408/409: how many messages of the request were left unfilled (when the server says)."""


def status_of(data: bytes, headers: dict[str, str] | None) -> Status | None:
    """The status carried by a message, or None when it is an ordinary message."""
    if data or not headers:
        return None
    code = headers.get(STATUS)
    if code is None or not code.isdigit():
        return None
    pending = headers.get(PENDING_MSGS)
    # nats-py keys an inline status's description by the ``Header.DESCRIPTION`` enum member, whose hash is
    # not that of "Description"; a description sent as an ordinary header line has the plain key.
    description = headers.get(Header.DESCRIPTION) or headers.get(DESCRIPTION, "")
    return Status(int(code), description, int(pending) if pending and pending.isdigit() else None)


def next_request(
    batch: int,
    *,
    expires_s: float,
    heartbeat_s: float = 0.0,
    no_wait: bool = False,
    group: str | None = None,
    pin_id: str | None = None,
) -> bytes:
    """Body of a ``$JS.API.CONSUMER.MSG.NEXT`` request (durations in nanoseconds on the wire).

    ``group`` names the consumer's priority group; ``pin_id`` is the pin the server gave this client (a
    request carrying it keeps the pin; one without it waits while another client is pinned).
    """
    body: dict[str, object] = {"batch": batch}
    if expires_s > 0:
        body["expires"] = int(expires_s * 1e9)
    if heartbeat_s > 0:
        body["idle_heartbeat"] = int(heartbeat_s * 1e9)
    if no_wait:
        body["no_wait"] = True
    if group is not None:
        body["group"] = group
        if pin_id:
            body["id"] = pin_id
    return json.dumps(body, separators=(",", ":")).encode()


def nak_body(delay_s: float) -> bytes:
    """A negative ack asking for redelivery after ``delay_s``."""
    if delay_s <= 0:
        return NAK
    return NAK + b' {"delay":%d}' % int(delay_s * 1e9)

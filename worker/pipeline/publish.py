"""Outgoing messages on core NATS: predictions, and dead letters (the raw payload unchanged, the reason in headers).

:class:`NatsOutput` is the stream processor's output in core mode, and the JetStream intake's when no stream
stores the predictions (see :class:`spark_ml.worker.intake.base.Output`).

A dead letter never exceeds the server's ``max_payload`` (from the INFO the client received): the server
closes a connection that publishes more. When the refused payload plus the dead letter's headers would not fit,
the payload is cut to fit and ``Spark-Ml-Truncated`` carries its original size (:func:`fit_dead_letter`).

Every message says its encoding in ``Content-Type``. The header blocks of predictions are made once
(:data:`CONTENT_HEADS`) and written by the frame writer as they are: a batch costs no header formatting per
message. A dead letter's ``Content-Type`` is the encoding its payload was read in, or
``application/octet-stream`` when it could not be read (``decode``, ``payload_too_large``) or was cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.codec import CONTENT_TYPES, OCTET_STREAM, Encoding, Snapshot
from spark_ml.core.partition import published_subject
from spark_ml.core.tracecontext import TRACEPARENT
from spark_ml.worker.natsio.batchpub import publish_batch
from spark_ml.worker.natsio.writer import Heads, head
from spark_ml.worker.pipeline.deadletter import DeadLetter

__all__ = [
    "CONTENT_HEADS",
    "CONTENT_TYPE",
    "NatsOutput",
    "content_headers",
    "dead_letter_headers",
    "fit_dead_letter",
    "header_block_size",
    "header_safe",
    "heads_of",
    "traced_heads",
]

_HDR_LINE = len(b"NATS/1.0\r\n")
CONTENT_TYPE = "Content-Type"
CONTENT_HEADS: dict[Encoding, bytes] = {enc: head({CONTENT_TYPE: ct}) for enc, ct in CONTENT_TYPES.items()}
"""The header block of a message in each encoding, made once."""
_CONTENT_HEADERS: dict[Encoding, dict[str, str]] = {enc: {CONTENT_TYPE: ct} for enc, ct in CONTENT_TYPES.items()}
_UNREAD = frozenset({"decode", "payload_too_large"})
"""Dead letters whose payload was never read as msgpack or JSON."""


def content_headers(encoding: Encoding, trace: str | None = None) -> dict[str, str]:
    """``{"Content-Type": ...}`` of an encoding, then ``traceparent`` when ``trace`` is given (without one, a
    shared dict: copy it before adding to it)."""
    if trace is None:
        return _CONTENT_HEADERS[encoding]
    return {**_CONTENT_HEADERS[encoding], TRACEPARENT: trace}


_TRACE_LINE = TRACEPARENT.encode() + b": "


def traced_heads(encodings: Encoding | Sequence[Encoding], traces: Sequence[str | None]) -> list[bytes]:
    """The header blocks of a batch whose messages carry a ``traceparent`` each (None: that one carries none);
    the values were checked well-formed (hex and dashes), so they are written as they are."""
    each = [encodings] * len(traces) if isinstance(encodings, str) else encodings
    made: dict[tuple[str, str], bytes] = {}
    out: list[bytes] = []
    for enc, tp in zip(each, traces, strict=True):
        if tp is None:
            out.append(CONTENT_HEADS[enc])
            continue
        block = made.get((enc, tp))
        if block is None:
            block = made[enc, tp] = CONTENT_HEADS[enc] + _TRACE_LINE + tp.encode() + b"\r\n"
        out.append(block)
    return out


def heads_of(encodings: Encoding | Sequence[Encoding]) -> Heads:
    """The header blocks of a batch whose payloads are in ``encodings`` (one for all, or one each)."""
    if isinstance(encodings, str):
        return CONTENT_HEADS[encodings]
    return [CONTENT_HEADS[e] for e in encodings]


def header_safe(text: str, limit: int = 512) -> str:
    """NATS header values are single-line; keep them printable and bounded."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean[:limit]


def dead_letter_headers(letter: DeadLetter) -> dict[str, str]:
    """The headers of a dead letter: why it was refused, and where it came from (as published, before the
    partition mapping); its ``Content-Type`` is what its payload was read as (octet-stream when it was not read)."""
    encoding = letter.encoding
    readable = encoding is not None and letter.reason not in _UNREAD
    headers = {
        CONTENT_TYPE: CONTENT_TYPES[encoding] if readable and encoding is not None else OCTET_STREAM,
        subjects.H_ERROR: header_safe(letter.reason, 64),
        subjects.H_ERROR_MESSAGE: header_safe(letter.message),
        subjects.H_SUBJECT: header_safe(published_subject(letter.subject), 256),
    }
    if letter.stream_seq is not None:
        headers[subjects.H_STREAM_SEQ] = str(letter.stream_seq)
    if letter.trace is not None:
        headers[TRACEPARENT] = letter.trace
    return headers


def header_block_size(headers: dict[str, str]) -> int:
    """The bytes ``Client.publish`` writes for ``headers`` (``NATS/1.0``, one ``Name: value`` line each, a blank
    line): what counts against the server's ``max_payload`` beside the payload."""
    size = _HDR_LINE + 2
    for name, value in headers.items():
        size += len(name.strip().encode()) + 2 + len(value.strip().encode()) + 2
    return size


def fit_dead_letter(raw: bytes, headers: dict[str, str], max_payload: int) -> bytes:
    """``raw``, cut when it and ``headers`` would exceed ``max_payload``; a cut adds ``Spark-Ml-Truncated``."""
    if header_block_size(headers) + len(raw) <= max_payload:
        return raw
    headers[subjects.H_TRUNCATED] = str(len(raw))
    headers[CONTENT_TYPE] = OCTET_STREAM  # a cut payload no longer decodes
    return raw[: max(0, max_payload - header_block_size(headers))]


class NatsOutput:
    """Predictions and dead letters as core NATS publishes on one connection.

    Args:
        nc: the connection.
        message_id: the ``Nats-Msg-Id`` of each prediction (JetStream mode: from its input's stream sequence,
            so a predictions stream deduplicates a redelivery); None publishes without headers.
    """

    def __init__(self, nc: Client, *, message_id: Callable[[Snapshot], str | None] | None = None) -> None:
        self.nc = nc
        self._message_id = message_id

    async def publish(self, snaps: Sequence[Snapshot], payloads: list[bytes], heads: Heads) -> None:
        """Hand the batch to the connection in one write."""
        message_id = self._message_id
        if message_id is None:
            await publish_batch(self.nc, subjects.PREDICTION, payloads, heads=heads)
        else:
            await publish_batch(self.nc, subjects.PREDICTION, payloads, [message_id(s) for s in snaps], heads)

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Re-publish a refused payload unchanged on ``ml.dlq.snapshot`` (cut to fit the server's limit when it
        must be); the reason travels in headers."""
        headers = dead_letter_headers(letter)
        raw = fit_dead_letter(letter.raw, headers, self.nc.max_payload)
        await self.nc.publish(subjects.DLQ, raw, headers=headers)

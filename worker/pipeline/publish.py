"""Outgoing messages: predictions and dead letters (the raw payload, unchanged, with the reason in headers)."""

from __future__ import annotations

from nats.aio.client import Client

from spark_ml.core import subjects

__all__ = ["dead_letter", "header_safe"]


def header_safe(text: str, limit: int = 512) -> str:
    """NATS header values are single-line; keep them printable and bounded."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean[:limit]


async def dead_letter(
    nc: Client,
    raw: bytes,
    *,
    reason: str,
    message: str,
    subject: str,
    stream_seq: int | None = None,
) -> None:
    """Re-publish a refused payload unchanged on ``ml.dlq.snapshot``; the reason travels in headers."""
    headers = {
        subjects.H_ERROR: header_safe(reason, 64),
        subjects.H_ERROR_MESSAGE: header_safe(message),
        subjects.H_SUBJECT: header_safe(subject, 256),
    }
    if stream_seq is not None:
        headers[subjects.H_STREAM_SEQ] = str(stream_seq)
    await nc.publish(subjects.DLQ, raw, headers=headers)

"""A refused message on its way to ``ml.dlq.snapshot``: one value, built where the message is refused.

The processor builds a :class:`DeadLetter` once per refused message (never for a good one) and every output,
and every output that wraps another, passes that one value on unchanged (:meth:`Output.dead_letter
<spark_ml.worker.intake.base.Output.dead_letter>`). Its wire form, the payload unchanged and the reason in
headers, is made by the output that publishes it (:func:`spark_ml.worker.pipeline.publish.dead_letter_headers`).

This module holds only the value: the intakes (the seam's Protocol) and the pipeline both import it, and it
imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from spark_ml.core.codec import Encoding

__all__ = ["DeadLetter"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused payload and why it was refused (the headers it goes out with say the same)."""

    raw: bytes
    """The payload as received: re-published unchanged, cut only to fit the server's ``max_payload``."""
    reason: str
    """The outcome's code, ``Spark-Ml-Error`` (``decode``, ``payload_too_large``, ``max_deliver``, ...)."""
    message: str
    """What was wrong, for a person (``Spark-Ml-Error-Message``)."""
    subject: str
    """The subject it came on; its header names the subject as published, before the partition mapping."""
    stream_seq: int | None = None
    """Its sequence in the snapshot stream, None in core mode (the in-memory intake numbers its messages
    from 1)."""
    encoding: Encoding | None = None
    """What the payload was read as, for its ``Content-Type``; None when it could not be read."""
    trace: str | None = None
    """The ``traceparent`` it goes out with: its own, continued by a span of its own when tracing is on."""

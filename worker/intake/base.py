"""The intake seam: where snapshots come from, how their messages are settled, and where the output goes.

An :class:`Intake` is built first and supplies the processor's two collaborators: its :class:`Settlement`
(what to tell the source once a batch's outcome is known) and its :class:`Output` (where predictions and
dead letters go). The processor is then built with them, and handed to ``intake.start(processor)``: the
intake calls the processor's entry points (:class:`Processor`) and nothing else of it.

=============  =====================================  ==========================================
intake         settlement                             output
=============  =====================================  ==========================================
core           at-most-once: nothing to settle        core NATS publishes
jetstream      ack / terminate / nak with a delay     core publishes, or JetStream with PubAcks
memory         recorded on each message, for tests    kept in lists, for tests
=============  =====================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol

from spark_ml.core.codec import Snapshot
from spark_ml.core.errors import SparkMlError
from spark_ml.worker.natsio.writer import Heads
from spark_ml.worker.pipeline.deadletter import DeadLetter

__all__ = ["AtMostOnce", "DeadLetter", "Delivery", "Intake", "Output", "Processor", "Settlement"]


class Delivery(Protocol):
    """A message delivered with something to settle (a JetStream message, or an in-memory one)."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...

    @property
    def seq(self) -> int:
        """Its sequence in the source's stream (it goes into its dead letter's headers)."""
        ...


class Processor(Protocol):
    """The entry points an intake feeds (:class:`~spark_ml.worker.pipeline.stream.StreamProcessor`)."""

    async def on_msg(self, msg: Delivery) -> None:
        """A message to settle later: queue it, waiting for room; raises when the pool is closing."""
        ...

    async def on_raw(self, subject: str, raw: bytes, headers: dict[str, str] | None) -> None:
        """A core NATS message with its headers: queue it, waiting while its shard is full."""
        ...

    def on_raw_sync(self, subject: bytes, raw: bytes, headers: dict[str, str] | None = None) -> Awaitable[None] | None:
        """A core NATS message, its headers parsed (None without any): None when queued, else an awaitable to
        await first."""
        ...

    async def reject(self, raw: bytes, subject: str, exc: SparkMlError, *, ctx: object = None) -> None:
        """A message refused before it could be parsed (a subject or header block that cannot be decoded; ``ctx``:
        the :class:`Delivery` to settle, None in core mode): count it and dead-letter it unchanged."""
        ...


class Settlement(Protocol):
    """What the source is told once a batch's outcome is known (called by the processor, once per outcome)."""

    async def settle(self, published: Sequence[Snapshot]) -> None:
        """The predictions of ``published`` were handed to the output."""
        ...

    async def on_dead(self, ctx: object) -> None:
        """The message ``ctx`` (a :attr:`Snapshot.ctx`, None in core mode) was dead-lettered."""
        ...

    async def on_publish_failed(self, snaps: Sequence[Snapshot]) -> None:
        """The output raised for this batch: none of its predictions is known to be out."""
        ...


class Output(Protocol):
    """Where a batch's encoded predictions and each dead letter go."""

    async def publish(self, snaps: Sequence[Snapshot], payloads: list[bytes], heads: Heads) -> None:
        """Send ``payloads`` (one per snapshot, in order) to ``ml.prediction``, each with its header block from
        ``heads`` (one for all, or one each; ``Content-Type`` at least); raise when they could not be."""
        ...

    async def dead_letter(self, letter: DeadLetter) -> None:
        """Send a refused payload unchanged to ``ml.dlq.snapshot``, the reason in its headers (built by
        :func:`~spark_ml.worker.pipeline.publish.dead_letter_headers`); raise when it could not be sent."""
        ...


class Intake(Protocol):
    """Where snapshots come from, with the settlement and output that go with that source."""

    @property
    def settlement(self) -> Settlement: ...

    @property
    def output(self) -> Output: ...

    async def start(self, processor: Processor) -> None:
        """Begin delivering messages to ``processor`` (built with this intake's settlement and output)."""
        ...

    async def stop(self) -> None:
        """Stop taking new messages; those already received are still handed to the processor."""
        ...


class AtMostOnce:
    """The settlement of a source with nothing to acknowledge (core NATS): every hook does nothing."""

    async def settle(self, published: Sequence[Snapshot]) -> None:
        return None

    async def on_dead(self, ctx: object) -> None:
        return None

    async def on_publish_failed(self, snaps: Sequence[Snapshot]) -> None:
        return None

"""An in-memory intake and output, for tests: raw snapshot bytes in, predictions and dead letters out, no server.

The processor under test is the real one, built with this intake's settlement and output. Messages put in take
the route a real intake gives them: core mode's (the parser's synchronous call for a message without headers,
the awaited one with headers), or, with ``at_least_once``, JetStream's (each message is a :class:`MemoryMsg`
whose settlement is recorded on it: ``ack``, ``term``, ``nak``). The output keeps what would have been
published, dead letters with the headers a real one carries, and can be told to fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from spark_ml.core import subjects
from spark_ml.core.codec import Snapshot
from spark_ml.worker.intake.base import AtMostOnce, DeadLetter, Processor, Settlement
from spark_ml.worker.natsio.writer import Heads, head_dict
from spark_ml.worker.pipeline.publish import dead_letter_headers

__all__ = ["MemoryIntake", "MemoryMsg", "MemoryOutput", "Sent"]


@dataclass(eq=False)
class MemoryMsg:
    """A message put into a :class:`MemoryIntake`.

    Args:
        subject, data, headers: as published.
        seq: its place in the intake, from 1 (a JetStream stream sequence's stand-in).
        settled: how it was settled, in order (``ack``, ``term``, ``nak``); empty in core mode.
    """

    subject: str
    data: bytes
    headers: dict[str, str] | None
    seq: int
    settled: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Sent:
    """A message the output would have published: its subject, payload and headers."""

    subject: str
    data: bytes
    headers: dict[str, str] | None = None

    @property
    def reason(self) -> str | None:
        """A dead letter's reason (its ``Spark-Ml-Error`` header)."""
        return self.headers.get(subjects.H_ERROR) if self.headers else None


class MemoryOutput:
    """Keeps predictions and dead letters in lists; :meth:`wait` returns once enough have come.

    Set :attr:`failure` to make :meth:`publish` raise it (a refused or lost batch of predictions).
    """

    def __init__(self) -> None:
        self.predictions: list[Sent] = []
        self.dead_letters: list[Sent] = []
        self.failure: BaseException | None = None
        """Raised by every :meth:`publish` while set."""
        self._changed = asyncio.Event()

    async def publish(self, snaps: Sequence[Snapshot], payloads: list[bytes], heads: Heads) -> None:
        if self.failure is not None:
            raise self.failure
        blocks = [heads] * len(payloads) if isinstance(heads, bytes) else heads
        self.predictions.extend(
            Sent(subjects.PREDICTION, p, head_dict(h)) for p, h in zip(payloads, blocks, strict=True)
        )
        self._changed.set()

    async def dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letters.append(Sent(subjects.DLQ, letter.raw, dead_letter_headers(letter)))
        self._changed.set()

    async def wait(self, *, predictions: int = 0, dead_letters: int = 0, timeout: float = 5.0) -> None:
        """Return once at least that many predictions and dead letters were sent; TimeoutError after ``timeout``."""

        async def until() -> None:
            while len(self.predictions) < predictions or len(self.dead_letters) < dead_letters:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)


class MemorySettlement:
    """Records each settlement on its :class:`MemoryMsg`, as JetStream's acks, terminations and naks."""

    async def settle(self, published: Sequence[Snapshot]) -> None:
        for snap in published:
            _record(snap.ctx, "ack")

    async def on_dead(self, ctx: object) -> None:
        _record(ctx, "term")

    async def on_publish_failed(self, snaps: Sequence[Snapshot]) -> None:
        for snap in snaps:
            _record(snap.ctx, "nak")


def _record(ctx: object, how: str) -> None:
    if isinstance(ctx, MemoryMsg):
        ctx.settled.append(how)


class MemoryIntake:
    """Feeds the processor from :meth:`put` calls; its output is a :class:`MemoryOutput`.

    Args:
        at_least_once: deliver as the JetStream intake does (settlement recorded on each message), rather
            than as the core one (nothing to settle).
    """

    def __init__(self, *, at_least_once: bool = False) -> None:
        self.at_least_once = at_least_once
        self.output = MemoryOutput()
        self.settlement: Settlement = MemorySettlement() if at_least_once else AtMostOnce()
        self.delivered: list[MemoryMsg] = []
        """Every message put in, in order."""
        self._processor: Processor | None = None

    async def start(self, processor: Processor) -> None:
        self._processor = processor

    async def stop(self) -> None:
        self._processor = None

    async def put(
        self, data: bytes, subject: str = subjects.SNAPSHOT, *, headers: dict[str, str] | None = None
    ) -> MemoryMsg:
        """Deliver one message and return it once the processor took it (queued, or dead-lettered).

        Waits while its shard is full, as the real intakes do. A message that comes once the pool is closing
        is nak'ed (at-least-once), or dropped and counted by the processor (core).
        """
        processor = self._processor
        if processor is None:
            raise RuntimeError("the memory intake is not started")
        msg = MemoryMsg(subject, data, headers, len(self.delivered) + 1)
        self.delivered.append(msg)
        if self.at_least_once:
            try:
                await processor.on_msg(msg)
            except RuntimeError:  # the pool is closing: give it back, as the pull consumer does
                msg.settled.append("nak")
        elif headers is None:
            wait = processor.on_raw_sync(subject.encode(), data)
            if wait is not None:
                await wait
        else:
            await processor.on_raw(subject, data, headers)
        return msg

"""JetStream from the test's side: a predictions stream, publishing through outages, reading a stream back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, PubAck, StorageType, StreamConfig

from spark_ml.core import subjects
from tests.support.messages import Raw

__all__ = [
    "INTAKES",
    "PREDICTIONS",
    "Intake",
    "add_file_stream",
    "add_predictions_stream",
    "intake_state",
    "publish_until_acked",
    "read_predictions",
    "read_stream",
]

INTAKES = pytest.mark.parametrize("solo", [True, False], ids=["solo", "partitioned"])
"""Both jetstream intakes, as the parameter ``solo``: the shared durable (solo) and the partitioned one."""

PREDICTIONS = "PREDICTIONS"
"""The stream the tests create over ``ml.prediction`` (a worker finds it at start and publishes through it)."""


async def add_file_stream(js: JetStreamContext, name: str, subject: str, **config: Any) -> None:
    """A file-stored stream ``name`` over ``subject``, with ``config`` (limits, discard, dedup window) on top."""
    await js.add_stream(StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE, **config))


async def add_predictions_stream(js: JetStreamContext, **config: Any) -> None:
    """The user's predictions stream :data:`PREDICTIONS` over ``ml.prediction``, with ``config`` on top."""
    await add_file_stream(js, PREDICTIONS, subjects.PREDICTION, **config)


async def read_stream(js: JetStreamContext, stream: str, subject: str, timeout: float = 20.0) -> list[Raw]:
    """Every message now in ``stream``, through an ephemeral pull consumer without acks."""
    expected = (await js.stream_info(stream)).state.messages
    psub = await js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    got: list[Raw] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected:
            assert time.monotonic() < deadline, f"read {len(got)} of {expected} messages of {stream}"
            with contextlib.suppress(nats.errors.TimeoutError):
                got += [(m.data, m.headers) for m in await psub.fetch(min(expected - len(got), 1000), timeout=1)]
    finally:
        await psub.unsubscribe()
    return got


async def read_predictions(js: JetStreamContext) -> list[Raw]:
    """Every prediction now in :data:`PREDICTIONS`."""
    return await read_stream(js, PREDICTIONS, subjects.PREDICTION)


async def publish_until_acked(
    js: JetStreamContext, subject: str, payload: bytes, msg_id: str, deadline: float
) -> PubAck:
    """Publish with ``Nats-Msg-Id``, retrying through outages until a PubAck (retries deduplicate)."""
    while True:
        try:
            return await js.publish(subject, payload, timeout=1.0, headers={"Nats-Msg-Id": msg_id})
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@dataclass
class Intake:
    """What every consumer of the snapshot stream holds, summed: the shared durable of a solo worker, or the
    partitioned intake's one consumer per unit (the forwarder's too)."""

    consumers: list[ConsumerInfo]

    def _total(self, field: str) -> int:
        return sum(getattr(c, field) or 0 for c in self.consumers)

    @property
    def pending(self) -> int:
        return self._total("num_pending")

    @property
    def ack_pending(self) -> int:
        return self._total("num_ack_pending")

    @property
    def redelivered(self) -> int:
        """Un-acked messages delivered more than once."""
        return self._total("num_redelivered")

    @property
    def waiting(self) -> int:
        return self._total("num_waiting")

    @property
    def ack_floor(self) -> int:
        """The highest stream sequence below which some consumer acknowledged everything."""
        return max((c.ack_floor.stream_seq or 0 for c in self.consumers if c.ack_floor), default=0)

    @property
    def settled(self) -> bool:
        """Consumers exist, and none has anything to deliver or awaiting its ack."""
        return bool(self.consumers) and self.pending == 0 and self.ack_pending == 0


async def intake_state(js: JetStreamContext, stream: str = subjects.JS_STREAM) -> Intake:
    """The state of every consumer on ``stream`` (:class:`Intake`)."""
    return Intake(await js.consumers_info(stream))

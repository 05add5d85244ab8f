"""Messages the tests send and the sinks that collect what comes back.

Inputs: the seeds' example snapshot, and numbered snapshots whose ``ts`` is their id (reconciliation is
then set arithmetic over ids found in the predictions, the dead letters and the counted drops).
Sinks: :class:`Collector` keeps ``Msg`` objects and waits for a count; :class:`Sink` keeps raw bytes and
headers with no pending limits, so it never drops.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
from nats.aio.client import Client
from nats.aio.msg import Msg

from spark_ml.core import subjects
from spark_ml.core.codec import snapshot_from_mapping
from spark_ml.core.errors import InvalidInput

__all__ = [
    "SEED",
    "Collector",
    "Raw",
    "Sink",
    "decode_any",
    "publish_steadily",
    "snapshot",
    "snapshot_accepted",
    "ts_of",
]

SEED = {"ts": 1696723200000, "mid": 45000, "spreadBp": 2, "vol1m": 1000000, "rsi14": 55}
"""The seeds' example snapshot, exactly."""

Raw = tuple[bytes, dict[str, str] | None]
"""A message as a sink keeps it: payload and headers."""


async def publish_steadily(nc: Client, messages: list[tuple[str, bytes]], *, every: int = 400) -> None:
    """Publish ``(subject, payload)`` in order as a steady stream, not one burst: a flush and a short pause
    after each ``every`` messages; flushed at the end."""
    for i, (subject, payload) in enumerate(messages):
        await nc.publish(subject, payload)
        if i % every == every - 1:
            await nc.flush()
            await asyncio.sleep(0.01)
    await nc.flush()


def snapshot_accepted(data: dict[str, Any]) -> bool:
    """Whether a worker takes ``data`` as a snapshot (:func:`~spark_ml.core.codec.snapshot_from_mapping`)."""
    try:
        snapshot_from_mapping(data)
    except InvalidInput:
        return False
    return True


def decode_any(data: bytes) -> Any:
    """A JSON or msgpack payload, decoded (JSON when it starts with ``{``, as the codec decides)."""
    return json.loads(data) if data[:1] == b"{" else msgpack.unpackb(data, raw=False)


def snapshot(i: int, symbol: str) -> bytes:
    """Input number ``i``: its ``ts`` is its id."""
    return msgpack.packb({"ts": i, "mid": 100.0 + i % 7, "symbol": symbol})


def ts_of(data: bytes) -> int:
    value = msgpack.unpackb(data)["ts"]
    assert isinstance(value, int)
    return value


class Collector:
    """Collects messages of one subject; ``wait(n)`` returns once n have arrived (or fails after a timeout)."""

    def __init__(self) -> None:
        self.msgs: list[Msg] = []
        self._changed = asyncio.Event()

    async def cb(self, msg: Msg) -> None:
        self.msgs.append(msg)
        self._changed.set()

    async def wait(self, n: int, timeout: float = 10.0) -> list[Msg]:
        async def until() -> None:
            while len(self.msgs) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
        return self.msgs

    def bodies(self) -> list[dict[str, Any]]:
        return [decode_any(m.data) for m in self.msgs]


class Sink:
    """Every message of one subject, kept raw, with no pending limits: the sink never drops."""

    def __init__(self) -> None:
        self.msgs: list[Raw] = []

    async def _cb(self, msg: Msg) -> None:
        self.msgs.append((msg.data, msg.headers))

    @classmethod
    async def on(cls, nc: Client, subject: str) -> Sink:
        sink = cls()
        await nc.subscribe(subject, cb=sink._cb, pending_msgs_limit=0, pending_bytes_limit=0)
        await nc.flush()
        await nc.flush()  # nats-py 2.16: one flush can overtake a SUB still in the client's buffer
        return sink

    def ids(self) -> list[int]:
        return [ts_of(data) for data, _ in self.msgs]

    def reasons(self) -> dict[int, str]:
        """Dead letters: input id -> ``Spark-Ml-Error`` reason."""
        return {ts_of(data): (h or {}).get(subjects.H_ERROR, "?") for data, h in self.msgs}

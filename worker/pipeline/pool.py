"""The sharded micro-batching pool between NATS intake and the engine.

A symbol always hashes to the same shard and each shard handles one batch at a time, so a symbol's
snapshots are predicted in arrival order. Each shard's queue is bounded: when it is full, ``submit``
waits (and ``offer`` says no, so its caller waits in ``submit``); nothing is dropped until the pool closes.
The wait is the intake's backpressure: on the direct route it pauses the NATS client's reader, so the
backlog stays in the socket and the server; on a plain callback it stops the subscription's task, which
fills the client's pending buffer up to its limits, beyond which the client drops and counts a slow
consumer. A fixed set of shard tasks does all the work; no task is created per message.

Batching is adaptive: a shard takes whatever is queued (up to ``batch_max``) as soon as it runs, so a
lone message is not held back, and batches grow by themselves when load makes the queue longer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from spark_ml.worker.lifecycle import cancel_all

__all__ = ["Pool"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Shard(Generic[T]):
    __slots__ = ("busy", "current", "done", "index", "items", "nonempty", "space", "task")

    def __init__(self, index: int) -> None:
        self.index = index
        self.items: deque[T] = deque()
        self.nonempty = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()
        self.busy = False
        self.current = 0
        """Items of the batch being handled."""
        self.done = 0
        """Items handled so far (counted per batch, so the per-message path stays as it is)."""
        self.task: asyncio.Task[None] | None = None


class Pool(Generic[T]):
    """N shards, each a bounded queue plus one task that hands micro-batches to ``handler``.

    Args:
        handler: ``await handler(shard_index, batch)``; exceptions are logged and counted, never fatal.
        shards: number of shards.
        queue_max: bound of each shard's queue.
        batch_max: largest batch handed to ``handler``.
        batch_wait_s: extra wait to fill a batch once something is queued; 0 never waits.
        on_error: called with each exception the handler raised (for metrics).
    """

    def __init__(
        self,
        handler: Callable[[int, list[T]], Awaitable[None]],
        *,
        shards: int = 4,
        queue_max: int = 4096,
        batch_max: int = 256,
        batch_wait_s: float = 0.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if shards < 1 or queue_max < 1 or batch_max < 1:
            raise ValueError("shards, queue_max and batch_max must be >= 1")
        self._handler = handler
        self._shards = [_Shard[T](i) for i in range(shards)]
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.batch_wait_s = batch_wait_s
        self._on_error = on_error
        self._closing = False
        self._started = False
        self._index: dict[str, int] = {}
        self.handled = 0
        """Items handed to the handler so far."""

    def shard_of(self, key: str) -> int:
        # crc32, not hash(): stable across processes and runs, so a symbol's shard is reproducible.
        index = self._index.get(key)
        if index is None:
            index = zlib.crc32(key.encode()) % len(self._shards)
            if len(self._index) >= 65_536:  # hostile symbol churn: forget, rather than grow
                self._index.clear()
            self._index[key] = index
        return index

    def depths(self) -> list[int]:
        return [len(s.items) for s in self._shards]

    def pending(self) -> int:
        """Items queued or being handled."""
        return sum(len(s.items) for s in self._shards) + sum(1 for s in self._shards if s.busy)

    async def wait_handled(self, timeout: float) -> bool:
        """Wait until every item queued or being handled now has been handled (True), or ``timeout`` passed.

        Items queued later are not waited for (a partition handed over waits only for its own backlog).
        """
        targets = [(s, s.done + s.current + len(s.items)) for s in self._shards]
        deadline = time.monotonic() + timeout
        while any(s.done < t and s.task is not None and not s.task.done() for s, t in targets):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for shard in self._shards:
            shard.task = asyncio.create_task(self._run(shard), name=f"spark-ml-shard-{shard.index}")

    async def submit(self, key: str, item: T) -> None:
        """Queue an item for its key's shard, waiting while that shard is full."""
        if self._closing:
            raise RuntimeError("pool is closing")
        shard = self._shards[self.shard_of(key)]
        while len(shard.items) >= self.queue_max:
            shard.space.clear()
            await shard.space.wait()
        shard.items.append(item)
        if not shard.nonempty.is_set():
            shard.nonempty.set()
        elif len(shard.items) >= self.batch_max:
            # A full batch is waiting: let the shard run even though the NATS callback has more backlog.
            await asyncio.sleep(0)

    def offer(self, key: str, item: T) -> bool:
        """Queue an item without waiting; False (item not queued) when its shard is full or the pool is closing."""
        shards = self._shards
        shard = shards[0] if len(shards) == 1 else shards[self.shard_of(key)]  # one shard is the default
        items = shard.items
        if len(items) >= self.queue_max or self._closing:
            return False
        items.append(item)
        if not shard.nonempty.is_set():
            shard.nonempty.set()
        return True

    async def _run(self, shard: _Shard[T]) -> None:
        items = shard.items
        while True:
            if not items:
                if self._closing:
                    return
                shard.nonempty.clear()
                await shard.nonempty.wait()
                continue
            if self.batch_wait_s > 0 and len(items) < self.batch_max and not self._closing:
                await asyncio.sleep(self.batch_wait_s)
            n = min(len(items), self.batch_max)
            batch = [items.popleft() for _ in range(n)]
            if len(items) < self.queue_max:
                shard.space.set()
            shard.busy = True
            shard.current = n
            try:
                await self._handler(shard.index, batch)
            except Exception as exc:  # a failing batch is logged and counted; the shard keeps going
                log.exception("shard %d: batch of %d failed", shard.index, n)
                if self._on_error is not None:
                    self._on_error(exc)
            finally:
                shard.busy = False
                shard.current = 0
                shard.done += n
                self.handled += n
            if items:
                # More is queued: let the reader refill and the client's flusher write this batch's output
                # before the next one, rather than draining the whole queue in one turn of the loop.
                await asyncio.sleep(0)

    async def close(self, timeout: float = 10.0) -> int:
        """Finish what is queued (bounded by ``timeout``), then stop. Returns the number of items abandoned."""
        self._closing = True
        tasks = [s.task for s in self._shards if s.task is not None]
        for shard in self._shards:
            shard.nonempty.set()
        if not tasks:
            return sum(len(s.items) for s in self._shards)
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        abandoned = sum(len(s.items) for s in self._shards)
        await cancel_all(pending)
        if abandoned:
            log.warning("pool closed with %d items abandoned after %.1fs", abandoned, timeout)
        return abandoned

"""The shape of every started resource: ``start()``, ``stop()``, and ``async with`` doing both (STYLE.md)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

__all__ = ["Lifecycle", "cancel_all"]

_RECANCEL_S = 0.1


async def cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and return once every one has ended (their exceptions retrieved, not raised).

    One cancel is not always enough on Python 3.11: ``asyncio.wait_for`` returns the inner result and drops the
    cancel when both arrive in the same loop step (fixed in 3.12), and every nats-py request waits with it. A
    task's loop then goes round again and a stop awaiting it hangs for ever (seen in a worker's SIGTERM, its
    membership resync loop). So a task still running a moment later is cancelled again.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_S)
    await asyncio.gather(*tasks, return_exceptions=True)


class Lifecycle(ABC):
    """Base class of a resource that is started and stopped: ``async with`` starts it and always stops it.

    Subclasses implement :meth:`start` and :meth:`stop`; the worker app, the HTTP gateway, the analytics
    service, the metrics sidecar and the cluster's lease keeper and membership are such resources.
    """

    @abstractmethod
    async def start(self) -> None:
        """Acquire what the resource needs and begin serving."""

    @abstractmethod
    async def stop(self) -> None:
        """Release everything :meth:`start` acquired; safe to call when not started."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

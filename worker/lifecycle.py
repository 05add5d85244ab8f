"""The shape of every started resource: ``start()``, ``stop()``, and ``async with`` doing both (STYLE.md)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["Lifecycle"]


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

"""What a test starts, it stops: a group for factory fixtures, and a bounded wait for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

__all__ = ["Service", "Started", "started", "until"]


class Service(Protocol):
    """Anything with an async ``start`` and ``stop`` (a worker app, a gateway, a publisher...)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=Service)


class Started:
    """The services one factory fixture started, in start order."""

    def __init__(self) -> None:
        self.services: list[Service] = []

    async def start(self, service: S) -> S:
        """Start ``service`` and keep it for :meth:`stop_all`; returns it started."""
        await service.start()
        self.services.append(service)
        return service

    async def stop_all(self) -> None:
        for service in self.services:
            await service.stop()


@contextlib.asynccontextmanager
async def started() -> AsyncIterator[Started]:
    """A :class:`Started` group whose services are all stopped on exit (a factory fixture's teardown)."""
    group = Started()
    try:
        yield group
    finally:
        await group.stop_all()


async def until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> float:
    """Wait for ``predicate`` (bounded); returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(step)
    return time.monotonic() - start

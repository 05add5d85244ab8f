"""Which units this worker owns now: the intake says so, the ``ml.predict`` service follows.

The seam between the stream's ownership (leases, pins) and request-reply: a request for a symbol must be
answered with the state of the worker that owns the symbol's partition (docs/SCALEOUT.md, ``ml.predict``).
The intake calls :meth:`OwnedUnits.set` whenever its units change; the predict service listens, answers
``ml.predict.part.<n>`` for the partitions it owns and hands the others on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from spark_ml.core.partition import units

__all__ = ["Listener", "OwnedUnits"]

log = logging.getLogger(__name__)

Listener = Callable[[frozenset[int]], None]
"""Called with the new set each time it changes; it must not block (schedule the work, do not await it)."""


class OwnedUnits:
    """The units (partitions ``0..P-1``, forwarder ``P``) this worker owns now, and who wants to know.

    Listeners are plain callables, not coroutines: an intake reports while it holds its own lock, in the middle
    of a take-over or a hand-over, and must not wait for a listener's I/O (the predict service only wakes its
    own task). A failing listener is logged; it never breaks the intake.

    Args:
        initial: the units owned at creation (none by default: a partitioned intake reports what it takes).
    """

    def __init__(self, initial: Iterable[int] = ()) -> None:
        self._current = frozenset(initial)
        self._listeners: list[Listener] = []

    @classmethod
    def everything(cls, partitions: int) -> OwnedUnits:
        """Every unit of ``partitions``: what a single unpartitioned worker owns."""
        return cls(range(units(partitions)))

    @property
    def current(self) -> frozenset[int]:
        """The units owned now."""
        return self._current

    def set(self, owned: Iterable[int]) -> None:
        """Replace the owned units; the listeners hear of it when the set changed."""
        new = frozenset(owned)
        if new == self._current:
            return
        self._current = new
        for listener in list(self._listeners):
            try:
                listener(new)
            except Exception:
                log.exception("owned units: a listener failed")

    def set_everything(self, partitions: int) -> None:
        """Own every unit (an unpartitioned or solo intake)."""
        self.set(range(units(partitions)))

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every change from now on; returns the function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

"""Per-client request limits for the HTTP bridge: the ``limits`` library's moving window, kept in memory.

A moving window counts the hits of the last period exactly (no burst of twice the limit at a window
edge, as a fixed window allows). The in-memory store is per process, which matches the seeds' plugin:
each gateway process enforces the limit for the clients it serves.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

__all__ = ["ClientRateLimiter"]


class ClientRateLimiter:
    """Grants or refuses one request per call, per client identity.

    The synchronous storage is used on purpose: a hit is a few list operations under an uncontended
    lock, so it never yields to the event loop (the asyncio storage hops to a thread on every expiry sweep).

    Args:
        rate: the limit in ``limits`` notation, e.g. ``"20/second"`` or ``"100 per minute"``.

    Raises:
        ValueError: when ``rate`` is not in ``limits`` notation.
    """

    def __init__(self, rate: str) -> None:
        try:
            self.item: RateLimitItem = parse(rate)
        except ValueError as exc:
            raise ValueError(f"rate_limit {rate!r} is not in limits notation (e.g. '20/second'): {exc}") from exc
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, client: str) -> float | None:
        """Count one request of ``client``; None when allowed, else the seconds until a slot frees up."""
        if self._limiter.hit(self.item, client):
            return None
        reset_at, _ = self._limiter.get_window_stats(self.item, client)
        return max(reset_at - time.time(), 0.0)

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """A ``Retry-After`` value: whole seconds, at least 1 (HTTP has no fractional form)."""
        return str(max(1, math.ceil(wait_s)))

"""Per-client request limits for the HTTP bridge: an exact moving window, in memory, O(1) per request.

The rate is written in the ``limits`` library's notation (``"20/second"``, ``"100 per minute"``) and parsed
by it. The counting is done here rather than by ``limits``' in-memory storages because both put their
expiry sweep on the request path, measured on this machine (1,000 hits 1 ms apart, moving window):
the synchronous storage starts a ``threading.Timer`` whenever the previous one has ended (p99 of a hit
0.3-4 ms while the machine was loaded), and the asyncio one creates a task and hops to a thread for every
key on every sweep (about 170 us of CPU per hit). Here a client's last ``limit`` hit times sit in a
bounded deque, so nothing needs sweeping, and the number of clients tracked is bounded (least recently
seen forgotten first).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from limits import parse

__all__ = ["ClientRateLimiter"]


class ClientRateLimiter:
    """Grants or refuses one request per call, per client identity.

    A client is allowed a request when it made fewer than ``limit`` in the last ``period`` seconds
    (a moving window: no burst of twice the limit across a window edge, as fixed windows allow).

    Args:
        rate: the limit in ``limits`` notation, e.g. ``"20/second"`` or ``"100 per minute"``.
        max_clients: clients remembered at once; beyond it the least recently seen is forgotten.
        clock: monotonic seconds (injectable for tests).

    Raises:
        ValueError: when ``rate`` is not in ``limits`` notation.
    """

    def __init__(self, rate: str, *, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        try:
            item = parse(rate)
        except ValueError as exc:
            raise ValueError(f"rate_limit {rate!r} is not in limits notation (e.g. '20/second'): {exc}") from exc
        self.limit: int = item.amount
        self.period: float = float(item.get_expiry())
        self.max_clients = max_clients
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, client: str) -> float | None:
        """Count one request of ``client``; None when allowed, else the seconds until it would be."""
        now = self._clock()
        hits = self._hits.get(client)
        if hits is None:
            hits = self._hits[client] = deque(maxlen=self.limit)
            if len(self._hits) > self.max_clients:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(client)
        if len(hits) == self.limit:
            # hits[0] is the oldest of the last `limit` requests: while it is inside the window, all are.
            wait = hits[0] + self.period - now
            if wait > 0:
                return wait
        hits.append(now)  # maxlen drops the oldest, which has left the window
        return None

    def __len__(self) -> int:
        return len(self._hits)

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """A ``Retry-After`` value: whole seconds, at least 1 (HTTP has no fractional form)."""
        return str(max(1, math.ceil(wait_s)))

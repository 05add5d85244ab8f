"""Knowing that the server has seen a client's subscriptions before another client publishes.

``await nc.flush()`` is not that in nats-py 2.16: ``subscribe`` leaves its ``SUB`` in the client's outgoing
buffer for the flusher task, while ``flush`` writes its ``PING`` straight to the socket, so the ``PONG`` can
come back before the server has read the ``SUB``. A message published from another connection right then
finds no subscriber and is gone (``test_direct_route_sees_what_a_callback_sees`` failed about 1 run in 12).

:func:`synced` makes a round trip that is queued behind everything already in the buffer: a request to a
subject nobody listens on. The server handles one connection's commands in order, so its "no responders"
answer means every earlier ``SUB``, ``UNSUB`` and ``PUB`` of this client has been processed.
A publish from the same client needs none of this: it is queued behind the ``SUB`` anyway.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import NoRespondersError

__all__ = ["synced"]


async def synced(nc: Client, timeout: float = 5.0) -> None:
    """Return once the server has processed every command ``nc`` queued before this call."""
    try:
        await nc.request(nc.new_inbox(), b"", timeout=timeout)
    except NoRespondersError:
        return
    raise AssertionError("synced: a request to a fresh inbox was answered")  # pragma: no cover

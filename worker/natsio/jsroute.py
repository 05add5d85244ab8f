"""Inbox messages handed from nats-py's protocol parser straight to a handler, reply subject and headers included.

:mod:`spark_ml.worker.natsio.directsub` does this for core subscriptions, whose handler needs only subject, payload and
content type. JetStream's pull inboxes need the reply (the ack subject) and the status headers too, so
this module routes a subscription's raw frames to ``handler(subject, reply, data, headers)`` with the
headers parsed by the client's own routine (only when there are any). It relies on the same nats-py
internal as :mod:`spark_ml.worker.natsio.directsub` (the parser calls ``Client._process_msg``), chains onto whatever is
installed already, and falls back to an ordinary callback subscription when the internal is missing.

The route outlives ``unsubscribe`` until :func:`unroute`: frames the server sent before it saw the
unsubscribe still reach the handler (a pull consumer must not drop messages it was delivered).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from spark_ml.worker.natsio.directsub import supported

__all__ = ["RawHandler", "subscribe_raw", "unroute"]

RawHandler = Callable[[bytes, bytes, bytes, "dict[str, str] | None"], Awaitable[None]]
"""``await handler(subject, reply, data, headers)``; subject and reply as the wire bytes."""

_ROUTES = "_spark_ml_raw_routes"


async def subscribe_raw(nc: Client, subject: str, handler: RawHandler) -> tuple[Subscription, bool]:
    """Subscribe to ``subject`` and route its messages to ``handler``; returns it and whether routing is direct."""

    async def callback(msg: Msg) -> None:
        await handler(msg.subject.encode(), (msg.reply or "").encode(), msg.data, msg.headers)

    # No pending limits: what arrives here was asked for (pull requests, PubAcks) and is bounded by it.
    sub = await nc.subscribe(subject, cb=callback, pending_msgs_limit=0, pending_bytes_limit=0)
    if not supported(nc):
        return sub, False
    _routes(nc)[sub._id] = handler
    return sub, True


def unroute(nc: Client, sub: Subscription) -> None:
    """Stop routing ``sub``'s messages (after it was unsubscribed and what was in flight has arrived)."""
    routes: dict[int, RawHandler] | None = getattr(nc, _ROUTES, None)
    if routes is not None:
        routes.pop(sub._id, None)


def _routes(nc: Client) -> dict[int, RawHandler]:
    routes: dict[int, RawHandler] | None = getattr(nc, _ROUTES, None)
    if routes is not None:
        return routes
    routes = {}
    setattr(nc, _ROUTES, routes)
    regular = nc._process_msg  # whatever is installed: nats-py's method or another router
    stats = nc.stats

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        handler = routes.get(sid)
        if handler is None:
            await regular(sid, subject, reply, data, headers)  # type: ignore[arg-type]  # the parser passes None
            return
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        await handler(subject, reply, data, await nc._process_headers(headers) if headers else None)

    nc._process_msg = process_msg  # type: ignore[method-assign]
    return routes

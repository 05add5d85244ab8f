"""Inbox messages handed from nats-py's protocol parser straight to a handler, reply subject and headers included.

:mod:`spark_ml.worker.natsio.directsub` does this for core subscriptions, whose handler needs only subject, payload
and content type. JetStream's pull inboxes need the reply (the ack subject) and the status headers too, so
:func:`subscribe_raw` routes a subscription's raw frames to ``handler(subject, reply, data, headers)`` through the
same :mod:`spark_ml.worker.natsio.router`, and falls back to an ordinary callback subscription when the nats-py
internals it relies on are missing.

The route outlives ``unsubscribe`` until :func:`unroute`: frames the server sent before it saw the
unsubscribe still reach the handler (a pull consumer must not drop messages it was delivered).
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from spark_ml.worker.natsio import router
from spark_ml.worker.natsio.router import RawHandler, unroute

__all__ = ["RawHandler", "subscribe_raw", "unroute"]


async def subscribe_raw(nc: Client, subject: str, handler: RawHandler) -> tuple[Subscription, bool]:
    """Subscribe to ``subject`` and route its messages to ``handler``; returns it and whether routing is direct."""

    async def callback(msg: Msg) -> None:
        await handler(msg.subject.encode(), (msg.reply or "").encode(), msg.data, msg.headers)

    # No pending limits: what arrives here was asked for (pull requests, PubAcks) and is bounded by it.
    sub = await nc.subscribe(subject, cb=callback, pending_msgs_limit=0, pending_bytes_limit=0)
    return sub, router.route(nc, sub, handler, raw=True)

"""Core-NATS messages handed from nats-py's protocol parser straight to the stream, without a ``Msg``.

For every message of a callback subscription, nats-py builds a ``Msg``, puts it on an ``asyncio.Queue``
and lets the subscription's task await the callback: about 3 us of a ~10 us budget, spent before our
code sees a byte. :func:`subscribe_direct` subscribes as usual (so reconnects, draining and
unsubscribing keep working through the client) and then routes that subscription's messages, as the
parser produces them, to ``handler(subject, payload, headers)`` (:mod:`spark_ml.worker.natsio.router`).

With our :class:`~spark_ml.worker.natsio.fastparser.FastParser` in the client, a ``fast`` handler goes one step
further: messages without headers, and messages with a common header block (``Content-Type``, ``traceparent``:
what ``spark_ml.client`` sends; see :mod:`spark_ml.worker.natsio.headerblock`), reach
``fast(subject_bytes, payload, headers)`` synchronously from the parser, with no coroutine per message (see
:data:`spark_ml.worker.natsio.fastparser.SyncHandler`); messages with any other header block keep the ``handler``
route.

Without the nats-py internals the router relies on, the subscription stays a plain callback subscription, slower
and otherwise identical. ``tests/worker/test_directsub.py`` holds both routes to the same results on a real server.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from spark_ml.worker.natsio import router
from spark_ml.worker.natsio.fastparser import FastParser, SyncHandler
from spark_ml.worker.natsio.router import DirectHandler, UndecodableHandler, unroute

__all__ = ["DirectHandler", "UndecodableHandler", "subscribe_direct", "unroute"]


async def subscribe_direct(
    nc: Client,
    subject: str,
    *,
    queue: str,
    handler: DirectHandler,
    fast: SyncHandler | None = None,
    undecodable: UndecodableHandler | None = None,
    **subscribe_kwargs: Any,
) -> tuple[Subscription, bool]:
    """Subscribe and route the subscription's messages to ``handler``; returns it and whether routing is on.

    Messages that arrive through the regular path (unsupported client) reach ``handler`` too, through an
    ordinary callback, so the caller sees one interface either way. ``undecodable`` gets, on the direct route,
    the messages whose subject or header block cannot be decoded (see :mod:`spark_ml.worker.natsio.router`).
    """

    async def callback(msg: Msg) -> None:
        await handler(msg.subject, msg.data, msg.headers or None)

    sub = await nc.subscribe(subject, queue=queue, cb=callback, **subscribe_kwargs)
    if not router.route(nc, sub, handler, raw=False, undecodable=undecodable):
        return sub, False
    parser = getattr(nc, "_ps", None)
    if fast is not None and isinstance(parser, FastParser):
        parser.direct[sub._id] = fast
    return sub, True

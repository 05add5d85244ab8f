"""Core-NATS messages handed from nats-py's protocol parser straight to the stream, without a ``Msg``.

For every message of a callback subscription, nats-py builds a ``Msg``, puts it on an ``asyncio.Queue``
and lets the subscription's task await the callback: about 3 us of a ~10 us budget, spent before our
code sees a byte. :func:`subscribe_direct` subscribes as usual (so reconnects, draining and
unsubscribing keep working through the client) and then routes that subscription's messages, as the
parser produces them, to ``handler(subject, payload, content_type)``.

With our :class:`~spark_ml.worker.natsio.fastparser.FastParser` in the client, a ``fast`` handler goes one step further:
messages without headers reach ``fast(subject_bytes, payload)`` synchronously from the parser, with no
coroutine per message (see :data:`spark_ml.worker.natsio.fastparser.SyncHandler`); messages with headers keep the
``handler`` route.

It relies on one nats-py internal: the parser calls ``Client._process_msg(sid, subject, reply, data,
headers)`` for each message (nats-py 2.x). :func:`supported` checks for it; without it the subscription
stays a plain callback subscription, slower and otherwise identical. ``tests/worker/test_directsub.py``
holds both routes to the same results on a real server.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from spark_ml.worker.natsio.fastparser import FastParser, SyncHandler

__all__ = ["DirectHandler", "subscribe_direct", "supported", "unroute"]

DirectHandler = Callable[[str, bytes, "str | None"], Awaitable[None]]
"""``await handler(subject, payload, content_type)``."""

_ROUTES = "_spark_ml_direct_routes"
_EXPECTED = ["sid", "subject", "reply", "data", "headers"]


def supported(nc: Client) -> bool:
    """Whether ``nc`` dispatches parsed messages through ``_process_msg`` with the expected arguments."""
    fn = getattr(type(nc), "_process_msg", None)
    if fn is None or not hasattr(nc, "_process_headers") or not isinstance(getattr(nc, "stats", None), dict):
        return False
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return params[1:] == _EXPECTED


async def subscribe_direct(
    nc: Client,
    subject: str,
    *,
    queue: str,
    handler: DirectHandler,
    fast: SyncHandler | None = None,
    **subscribe_kwargs: Any,
) -> tuple[Subscription, bool]:
    """Subscribe and route the subscription's messages to ``handler``; returns it and whether routing is on.

    Messages that arrive through the regular path (unsupported client) reach ``handler`` too, through an
    ordinary callback, so the caller sees one interface either way.
    """

    async def callback(msg: Msg) -> None:
        content_type = msg.headers.get("Content-Type") if msg.headers else None
        await handler(msg.subject, msg.data, content_type)

    sub = await nc.subscribe(subject, queue=queue, cb=callback, **subscribe_kwargs)
    if not supported(nc):
        return sub, False
    _routes(nc)[sub._id] = handler
    parser = getattr(nc, "_ps", None)
    if fast is not None and isinstance(parser, FastParser):
        parser.direct[sub._id] = fast
    return sub, True


def unroute(nc: Client, sub: Subscription) -> None:
    """Stop routing ``sub`` (after it was drained or unsubscribed)."""
    routes: dict[int, DirectHandler] | None = getattr(nc, _ROUTES, None)
    if routes is not None:
        routes.pop(sub._id, None)
    parser = getattr(nc, "_ps", None)
    if isinstance(parser, FastParser):
        parser.direct.pop(sub._id, None)


def _routes(nc: Client) -> dict[int, DirectHandler]:
    routes: dict[int, DirectHandler] | None = getattr(nc, _ROUTES, None)
    if routes is not None:
        return routes
    routes = {}
    setattr(nc, _ROUTES, routes)
    regular = nc._process_msg
    stats = nc.stats

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        handler = routes.get(sid)
        if handler is None:
            await regular(sid, subject, reply, data, headers)  # type: ignore[arg-type]  # the parser passes None
            return
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        content_type = None
        if headers:
            parsed = await nc._process_headers(headers)
            if parsed:
                content_type = parsed.get("Content-Type")
        await handler(subject.decode(), data, content_type)

    # An instance attribute shadows the method the parser looks up on this client only.
    nc._process_msg = process_msg  # type: ignore[method-assign]
    return routes

"""The one router: a client's parsed messages go, by subscription id, straight to our handlers.

nats-py's protocol parser hands every ``MSG``/``HMSG`` to ``Client._process_msg(sid, subject, reply, data,
headers)``, which builds a ``Msg``, queues it and lets the subscription's task await the callback. For a
routed subscription, :func:`route` replaces that step on one client (an instance attribute shadowing the
method) with a dictionary lookup and one await of the handler, in one of two shapes:

- a core handler (:mod:`spark_ml.worker.natsio.directsub`): ``await handler(subject, payload, content_type)``;
- a raw handler (:mod:`spark_ml.worker.natsio.jsroute`): ``await handler(subject, reply, data, headers)``, subject
  and reply as the wire bytes, headers parsed by the client's own routine (only when there are any).

Every other subscription of the client takes nats-py's own path, unchanged. The client's ``in_msgs`` and
``in_bytes`` counters are kept as ``_process_msg`` keeps them. A route outlives ``unsubscribe`` until
:func:`unroute`: frames the server sent before it saw the unsubscribe still reach the handler.

:func:`supported` checks the internals (see :mod:`spark_ml.worker.natsio`); without them :func:`route` returns
False and the caller keeps its plain callback subscription: slower, otherwise identical.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Literal

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from spark_ml.worker.natsio.fastparser import FastParser

__all__ = ["DirectHandler", "RawHandler", "route", "supported", "unroute"]

DirectHandler = Callable[[str, bytes, "str | None"], Awaitable[None]]
"""``await handler(subject, payload, content_type)``."""

RawHandler = Callable[[bytes, bytes, bytes, "dict[str, str] | None"], Awaitable[None]]
"""``await handler(subject, reply, data, headers)``; subject and reply as the wire bytes."""

_Route = tuple[Literal[True], RawHandler] | tuple[Literal[False], DirectHandler]
"""``(raw, handler)``: the shape is one flag per route, so one dispatcher serves both without a wrapper call."""

_ROUTES = "_spark_ml_routes"
PROCESS_MSG_PARAMS = ["sid", "subject", "reply", "data", "headers"]
"""The parameters (after ``self``) of ``Client._process_msg`` the parser passes positionally."""


def supported(nc: Client) -> bool:
    """Whether ``nc`` dispatches parsed messages through ``_process_msg`` with the expected arguments."""
    fn = getattr(type(nc), "_process_msg", None)
    if fn is None or not hasattr(nc, "_process_headers") or not isinstance(getattr(nc, "stats", None), dict):
        return False
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return params[1:] == PROCESS_MSG_PARAMS


def route(nc: Client, sub: Subscription, handler: RawHandler | DirectHandler, *, raw: bool) -> bool:
    """Route ``sub``'s messages to ``handler`` (a :data:`RawHandler` when ``raw``); False when ``nc`` cannot.

    False leaves ``sub`` as it was: its own callback keeps receiving its messages.
    """
    if not supported(nc):
        return False
    _routes(nc)[sub._id] = (raw, handler)  # type: ignore[assignment]  # ``raw`` says which handler it is
    return True


def unroute(nc: Client, sub: Subscription) -> None:
    """Stop routing ``sub`` (after it was drained or unsubscribed and what was in flight has arrived)."""
    routes: dict[int, _Route] | None = getattr(nc, _ROUTES, None)
    if routes is not None:
        routes.pop(sub._id, None)
    parser = getattr(nc, "_ps", None)
    if isinstance(parser, FastParser):
        parser.direct.pop(sub._id, None)


def _routes(nc: Client) -> dict[int, _Route]:
    routes: dict[int, _Route] | None = getattr(nc, _ROUTES, None)
    if routes is not None:
        return routes
    routes = {}
    setattr(nc, _ROUTES, routes)
    regular = nc._process_msg
    process_headers = nc._process_headers
    stats = nc.stats

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        entry = routes.get(sid)
        if entry is None:
            await regular(sid, subject, reply, data, headers)  # type: ignore[arg-type]  # the parser passes None
            return
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        if entry[0]:
            await entry[1](subject, reply, data, await process_headers(headers) if headers else None)
            return
        content_type = None
        if headers:
            parsed = await process_headers(headers)
            if parsed:
                content_type = parsed.get("Content-Type")
        await entry[1](subject.decode(), data, content_type)

    # An instance attribute shadows the method the parser looks up on this client only.
    nc._process_msg = process_msg  # type: ignore[method-assign]
    return routes

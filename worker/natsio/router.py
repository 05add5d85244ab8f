"""The one router: a client's parsed messages go, by subscription id, straight to our handlers.

nats-py's protocol parser hands every ``MSG``/``HMSG`` to ``Client._process_msg(sid, subject, reply, data,
headers)``, which builds a ``Msg``, queues it and lets the subscription's task await the callback. For a
routed subscription, :func:`route` replaces that step on one client (an instance attribute shadowing the
method) with a dictionary lookup and one await of the handler, in one of two shapes:

- a core handler (:mod:`spark_ml.worker.natsio.directsub`): ``await handler(subject, payload, headers)``, headers
  parsed (only when there are any; None otherwise);
- a raw handler (:mod:`spark_ml.worker.natsio.jsroute`): ``await handler(subject, reply, data, headers)``, subject
  and reply as the wire bytes, headers parsed by the client's own routine (only when there are any).

Every other subscription of the client takes nats-py's own path, unchanged but guarded (:func:`guard` installs
the dispatcher on a connection before any route): a subject or reply that is not UTF-8, or a header block
nats-py's routine cannot parse, raises inside that path and would end the client's read loop. Here such a frame
is reported (:func:`~spark_ml.worker.natsio.fastparser.wire_error`) and, by case:

- a core route's message whose subject or header block cannot be decoded goes to the route's ``undecodable``
  handler (the intake dead-letters it with the reason ``decode``, the subject escaped); without one it is skipped;
- a raw route's or a regular subscription's message with a header block that cannot be parsed is delivered
  without its headers (a request can still be answered, a JetStream message still settled);
- a regular subscription's message whose subject or reply cannot be decoded is skipped (there is no one to
  answer);
- a handler that raises is reported and the next frame is read.

The client's ``in_msgs`` and ``in_bytes`` counters are kept as ``_process_msg`` keeps them. A route outlives
``unsubscribe`` until :func:`unroute`: frames the server sent before it saw the unsubscribe still reach the handler.

:func:`supported` checks the internals (see :mod:`spark_ml.worker.natsio`); without them :func:`route` returns
False and the caller keeps its plain callback subscription: slower, otherwise identical.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Literal

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from spark_ml.core.errors import InvalidInput, SparkMlError
from spark_ml.worker.natsio.fastparser import FastParser, wire_error
from spark_ml.worker.natsio.headerblock import matches_nats_py, parse_block

__all__ = ["DirectHandler", "RawHandler", "UndecodableHandler", "escape", "guard", "route", "supported", "unroute"]

DirectHandler = Callable[[str, bytes, "dict[str, str] | None"], Awaitable[None]]
"""``await handler(subject, payload, headers)``."""

RawHandler = Callable[[bytes, bytes, bytes, "dict[str, str] | None"], Awaitable[None]]
"""``await handler(subject, reply, data, headers)``; subject and reply as the wire bytes."""

UndecodableHandler = Callable[[bytes, str, SparkMlError], Awaitable[None]]
"""``await undecodable(payload, escaped_subject, error)``: a core route's message that cannot be decoded
(the stream processor's ``reject``: a dead letter with the reason ``decode``)."""

_Route = tuple[Literal[True], RawHandler, None] | tuple[Literal[False], DirectHandler, UndecodableHandler | None]
"""``(raw, handler, undecodable)``: the shape is one flag per route, so one dispatcher serves both without a
wrapper call."""

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


def guard(nc: Client) -> bool:
    """Install the guarded dispatcher on ``nc`` now, for every subscription; False when ``nc`` cannot have it."""
    if not supported(nc):
        return False
    _routes(nc)
    return True


def route(
    nc: Client,
    sub: Subscription,
    handler: RawHandler | DirectHandler,
    *,
    raw: bool,
    undecodable: UndecodableHandler | None = None,
) -> bool:
    """Route ``sub``'s messages to ``handler`` (a :data:`RawHandler` when ``raw``); False when ``nc`` cannot.

    ``undecodable`` (core routes) takes the messages whose subject or header block cannot be decoded.
    False leaves ``sub`` as it was: its own callback keeps receiving its messages.
    """
    if not supported(nc):
        return False
    entry = (True, handler, None) if raw else (False, handler, undecodable)
    _routes(nc)[sub._id] = entry  # type: ignore[assignment]  # ``raw`` says which handler it is
    return True


def unroute(nc: Client, sub: Subscription) -> None:
    """Stop routing ``sub`` (after it was drained or unsubscribed and what was in flight has arrived)."""
    routes: dict[int, _Route] | None = getattr(nc, _ROUTES, None)
    if routes is not None:
        routes.pop(sub._id, None)
    parser = getattr(nc, "_ps", None)
    if isinstance(parser, FastParser):
        parser.direct.pop(sub._id, None)


def escape(subject: bytes) -> str:
    """A wire subject as text, undecodable bytes as ``\\xNN`` (for a dead letter's header and the logs)."""
    return subject.decode("utf-8", "backslashreplace")


def _routes(nc: Client) -> dict[int, _Route]:  # noqa: C901 - one dispatcher, every case of a hostile frame
    routes: dict[int, _Route] | None = getattr(nc, _ROUTES, None)
    if routes is not None:
        return routes
    routes = {}
    setattr(nc, _ROUTES, routes)
    regular = nc._process_msg
    process_headers = nc._process_headers
    stats = nc.stats
    plain_headers = matches_nats_py()

    async def parsed_headers(headers: bytes) -> tuple[bool, dict[str, str] | None]:
        """(parsed, headers): nats-py's routine raises on some malformed blocks (``NATS/1.0`` alone, a status
        line that is not UTF-8). A common block (every message spark-ml publishes) is read by
        :func:`~spark_ml.worker.natsio.headerblock.parse_block`, the same dict at a third of the cost."""
        if plain_headers and (fast := parse_block(headers)) is not None:
            return True, fast
        try:
            return True, await process_headers(headers)
        except Exception as exc:
            wire_error(nc, "headers", exc)
            return False, None

    async def process_regular(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        for kind, wire in (("subject", subject), ("reply", reply)):
            try:
                wire.decode()
            except UnicodeDecodeError as exc:  # nats-py's Msg would raise it; a bad reply cannot be answered
                wire_error(nc, kind, exc)
                return
        if headers:
            ok, _ = await parsed_headers(headers)
            if not ok:
                headers = None  # delivered without them: a request can still be answered
        await regular(sid, subject, reply, data, headers)  # type: ignore[arg-type]  # the parser passes None

    async def process_direct(
        handler: DirectHandler,
        undecodable: UndecodableHandler | None,
        subject: bytes,
        data: bytes,
        headers: bytes | None,
    ) -> None:
        try:
            text = subject.decode()
        except UnicodeDecodeError as exc:
            wire_error(nc, "subject", exc)
            if undecodable is not None:
                await undecodable(data, escape(subject), InvalidInput(f"subject is not UTF-8: {exc}", code="decode"))
            return
        parsed = None
        if headers:
            ok, parsed = await parsed_headers(headers)
            if not ok:
                if undecodable is not None:
                    await undecodable(data, text, InvalidInput("malformed header block", code="decode"))
                return
        await handler(text, data, parsed or None)

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
        entry = routes.get(sid)
        try:
            if entry is None:
                await process_regular(sid, subject, reply, data, headers)
                return
            stats["in_msgs"] += 1
            stats["in_bytes"] += len(data)
            if entry[0]:
                parsed = None
                if headers:
                    _, parsed = await parsed_headers(headers)  # without them when they cannot be parsed
                await entry[1](subject, reply, data, parsed)
                return
            await process_direct(entry[1], entry[2], subject, data, headers)
        except Exception as exc:  # a handler failed: ending the read loop would silence the whole connection
            wire_error(nc, "handler", exc)

    # An instance attribute shadows the method the parser looks up on this client only.
    nc._process_msg = process_msg  # type: ignore[method-assign]
    return routes

"""A faster NATS protocol parser for the client's hot direction: ``MSG`` and ``HMSG`` frames.

nats-py's parser matches a regular expression per frame and deletes each consumed frame from the front
of its buffer, which moves the rest of the buffer every time: about 2.4 us a message, a sixth of the
stream's budget. :class:`FastParser` walks the buffer with an offset and trims it once per read. Every
other operation (``PING``, ``PONG``, ``INFO``, ``+OK``, ``-ERR``, anything unknown) is handed, one
complete line at a time, to nats-py's own parser, so its handling of them does not change.

It keeps nats-py's parser state (``buf``, ``state``, ``needed``, ``header_needed``, ``msg_arg``), so a
frame split across reads continues correctly, and ``reset()`` on reconnect works as before.

:attr:`FastParser.direct` maps subscription ids to synchronous handlers (set by
:mod:`spark_ml.worker.natsio.directsub`):
a message for such an id goes to ``handler(subject, payload, headers)`` with no coroutine in between, and is
awaited only when the handler returns an awaitable (it has to wait for room). ``headers`` is None for a message
without them, and the parsed dict for a common header block (``NATS/1.0`` and ``Key: Value`` lines, read by
:func:`~spark_ml.worker.natsio.headerblock.parse_block`, equal to what nats-py's ``_process_headers`` makes of
it); a message with any other block (an inline status, odd whitespace, non-ASCII) takes nats-py's path,
``Client._process_msg``, as every message of other subscriptions does.
``tests/worker/test_fastparser.py`` holds it to nats-py's parser on arbitrary splits of arbitrary
protocol streams. :func:`install` swaps it into a connected client when the client looks as expected.

Nothing a publisher sends can end the client's read loop through it: a message whose handling raises (an
undecodable subject, a handler that failed) is reported through :func:`wire_error` (counted by the hook set
with :func:`on_wire_error`, logged once per kind) and skipped; its frame was already consumed, so the stream
stays in step. :func:`reading` tells whether the client's read loop still runs (liveness).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.errors import ProtocolError
from nats.protocol.parser import AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD, Parser

from spark_ml.worker.natsio.headerblock import matches_nats_py, parse_block

__all__ = ["PARSER_STATE", "FastParser", "SyncHandler", "install", "on_wire_error", "reading", "wire_error"]

log = logging.getLogger(__name__)

_CRLF = b"\r\n"
PARSER_STATE = ("buf", "state", "needed", "header_needed", "msg_arg")
"""nats-py's parser state that :class:`FastParser` shares and :func:`install` takes over mid-stream."""

SyncHandler = Callable[[bytes, bytes, "dict[str, str] | None"], "Awaitable[None] | None"]
"""``handler(subject, payload, headers)``: None when the message is taken, else an awaitable that takes it."""

_WIRE = "_spark_ml_wire"


class _WireErrors:
    """Per client: the counting hook, and the kinds already logged."""

    __slots__ = ("count", "logged")

    def __init__(self) -> None:
        self.count: Callable[[str], None] | None = None
        self.logged: set[str] = set()


def _wire(nc: Client) -> _WireErrors:
    state: _WireErrors | None = getattr(nc, _WIRE, None)
    if state is None:
        state = _WireErrors()
        setattr(nc, _WIRE, state)
    return state


def on_wire_error(nc: Client, count: Callable[[str], None]) -> None:
    """Have ``count(kind)`` called for every frame of ``nc`` that could not be taken (see :func:`wire_error`)."""
    _wire(nc).count = count


def wire_error(nc: Client, kind: str, exc: BaseException) -> None:
    """A frame that could not be taken as sent: counted by kind, logged once per kind and client, skipped.

    Kinds: ``subject``, ``reply`` (not UTF-8), ``headers`` (a header block nats-py cannot parse), ``handler``
    (the message's handler raised: a dead letter that could not be sent, say).
    """
    state = _wire(nc)
    if state.count is not None:
        try:
            state.count(kind)
        except Exception:  # a metric must not take the reader down either
            log.exception("counting a wire error failed")
    if kind not in state.logged:
        state.logged.add(kind)
        log.warning(
            "nats: a message's %s could not be taken as sent (%s: %s): dead-lettered, delivered without its "
            "headers, or skipped; counted in ml_wire_errors_total, logged once per kind",
            kind,
            type(exc).__name__,
            exc,
        )


def reading(nc: Client) -> bool:
    """Whether ``nc``'s read loop runs: False once closed, or when its reader task ended while connected.

    While reconnecting the old reader has ended and the new one is not started yet: that is not a stop.
    """
    if nc.is_closed:
        return False
    task = getattr(nc, "_reading_task", None)
    return not (nc.is_connected and task is not None and task.done())


class FastParser(Parser):
    """nats-py's :class:`~nats.protocol.parser.Parser`, with ``MSG``/``HMSG`` parsed by offset."""

    def __init__(self, nc: Client) -> None:
        super().__init__(nc)
        self.direct: dict[int, SyncHandler] = {}
        self.plain_headers = matches_nats_py()
        """Whether a direct route's common header blocks are read here (:mod:`.headerblock`)."""

    async def parse(self, data: bytes = b"") -> None:  # noqa: C901 - one loop over the buffer is the point
        buf = self.buf
        buf.extend(data)
        pos = 0
        end = len(buf)
        nc = self.nc
        direct = self.direct
        plain_headers = self.plain_headers
        n_direct = bytes_direct = 0
        view = memoryview(buf)  # slices copy once (tobytes), where bytes(buf[a:b]) copies twice
        try:
            while pos < end:
                if self.state == AWAITING_MSG_PAYLOAD:
                    needed = self.needed
                    if end - pos < needed + 2:
                        break
                    arg = self.msg_arg
                    subject, sid, reply, hsize = arg["subject"], arg["sid"], arg["reply"], self.header_needed
                    self.state = AWAITING_CONTROL_LINE
                    self.header_needed = 0
                else:
                    line_end = buf.find(_CRLF, pos)
                    if line_end < 0:
                        break
                    first = buf[pos]
                    if first == 0x4D and buf.startswith(b"MSG ", pos):  # "M"
                        args = view[pos + 4 : line_end].tobytes().split()
                        if len(args) == 3:
                            subject, sid_b, size = args
                            reply = b""
                        elif len(args) == 4:
                            subject, sid_b, reply, size = args
                        else:
                            raise ProtocolError("nats: malformed MSG")
                        hsize = 0
                    elif first == 0x48 and buf.startswith(b"HMSG ", pos):  # "H"
                        args = view[pos + 5 : line_end].tobytes().split()
                        if len(args) == 4:
                            subject, sid_b, hsize_b, size = args
                            reply = b""
                        elif len(args) == 5:
                            subject, sid_b, reply, hsize_b, size = args
                        else:
                            raise ProtocolError("nats: malformed MSG")
                        hsize = int(hsize_b)
                    else:
                        # Anything else is one line: nats-py's parser handles it exactly as it always has.
                        line = view[pos : line_end + 2].tobytes()
                        pos = line_end + 2
                        self.buf = bytearray(line)
                        try:
                            await Parser.parse(self)
                        finally:
                            if self.buf is not buf:
                                self.buf = buf
                        continue
                    sid = int(sid_b)
                    needed = int(size)
                    pos = line_end + 2
                    if end - pos < needed + 2:  # the payload is still on its way: wait in nats-py's state
                        self.msg_arg = {"subject": subject, "sid": sid, "reply": reply}
                        self.needed, self.header_needed = needed, hsize
                        self.state = AWAITING_MSG_PAYLOAD
                        break
                start = pos
                pos += needed + 2
                # The frame is consumed: whatever its handling raises, the stream stays in step.
                try:
                    handler = direct.get(sid)
                    if hsize:
                        block = view[start : start + hsize].tobytes()
                        hdr: bytes | None = block
                        payload = view[start + hsize : start + needed].tobytes()
                        # A direct route's common header block is read here; any other goes to nats-py's routine.
                        headers: dict[str, str] | None = (
                            parse_block(block) if handler is not None and plain_headers else None
                        )
                        if headers is None:
                            handler = None
                    else:
                        hdr = headers = None
                        payload = view[start : start + needed].tobytes()
                    if handler is not None:
                        n_direct += 1
                        bytes_direct += len(payload)
                        try:
                            wait = handler(subject, payload, headers)
                        except UnicodeDecodeError:
                            if _decodes(subject):
                                raise
                            # An undecodable subject: the routed path dead-letters it or counts it.
                            wait = nc._process_msg(sid, subject, reply, payload, hdr)
                        if wait is not None:
                            await wait
                            if self.buf is not buf:
                                return
                        continue
                    await nc._process_msg(sid, subject, reply, payload, hdr)
                except Exception as exc:
                    wire_error(nc, "handler", exc)
                if self.buf is not buf:  # reset by a reconnect while we waited: the rest is stale
                    return
        finally:
            view.release()
            if pos and self.buf is buf:
                del buf[:pos]
            if n_direct:  # the counters Client._process_msg keeps, for the messages that skipped it
                stats = nc.stats
                stats["in_msgs"] += n_direct
                stats["in_bytes"] += bytes_direct


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def install(nc: Client) -> bool:
    """Use :class:`FastParser` in a connected client; False (nothing changed) when its parser is not nats-py's."""
    current = getattr(nc, "_ps", None)
    if isinstance(current, FastParser):
        return True
    if type(current) is not Parser or not all(hasattr(current, name) for name in PARSER_STATE):
        return False
    if not isinstance(current.buf, bytearray) or not isinstance(current.msg_arg, dict):
        return False
    fast = FastParser(nc)
    # Take over the state mid-stream (the read loop may be between two reads of a split frame).
    fast.buf, fast.state, fast.needed = current.buf, current.state, current.needed
    fast.header_needed, fast.msg_arg = current.header_needed, current.msg_arg
    nc._ps = fast
    return True

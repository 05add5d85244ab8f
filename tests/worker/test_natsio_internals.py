"""The nats-py internals the fast path relies on (listed in ``spark_ml.worker.natsio``), on the installed nats-py.

Each internal is one test, named after it: a nats-py release that renames, removes or reshapes one fails here,
saying which and in which nats-py version, instead of quietly costing speed in production. The second half
shows what the code does today when they are missing: every path falls back to nats-py's public API. The
same fallbacks are held to the fast paths' results in test_directsub (unsupported client), test_batchpub
(fallback path), test_jspub (plain-publish) and test_jspull (plain callback path).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from nats.aio import client as nats_client
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header
from nats.protocol import parser as nats_parser

from spark_ml.worker.natsio import batchpub, directsub, fastparser, jsroute, router, writer
from spark_ml.worker.natsio.jspull import JsMsg
from spark_ml.worker.natsio.jswire import Status, status_of
from tests.support.natsync import synced

NATS_PY = version("nats-py")


class Internal(NamedTuple):
    """One internal: ``check(nc)`` returns what is wrong with it on a connected client, or None."""

    name: str
    check: Callable[[Client], str | None]


def _params(fn: Any) -> list[str] | None:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def _coroutine(owner: type, attr: str, params: list[str]) -> Callable[[Client], str | None]:
    """A coroutine method whose parameters (after ``self``) begin with ``params``."""

    def check(_: Client) -> str | None:
        fn = getattr(owner, attr, None)
        if fn is None:
            return "is gone"
        if not inspect.iscoroutinefunction(fn):
            return "is no longer a coroutine function"
        found = _params(fn)
        if found is None or found[1 : 1 + len(params)] != params:
            return f"takes {found}, not (self, {', '.join(params)}, ...)"
        return None

    return check


def _attribute(attr: str, kind: type | tuple[type, ...]) -> Callable[[Client], str | None]:
    """An attribute of a connected client, of type ``kind``."""

    def check(nc: Client) -> str | None:
        if not hasattr(nc, attr):
            return "is gone"
        value = getattr(nc, attr)
        return None if isinstance(value, kind) else f"is a {type(value).__name__}, not {kind}"

    return check


def _stats(nc: Client) -> str | None:
    stats = getattr(nc, "stats", None)
    if not isinstance(stats, dict):
        return "is not a dict"
    missing = {"in_msgs", "in_bytes", "out_msgs", "out_bytes", "reconnects"} - set(stats)
    return f"has no {sorted(missing)}" if missing else None


def _parser(nc: Client) -> str | None:
    ps = getattr(nc, "_ps", None)
    return None if isinstance(ps, nats_parser.Parser) else f"is a {type(ps).__name__}, not nats-py's Parser"


def _parser_state(nc: Client) -> str | None:
    # A MSG frame split before its payload: the parser waits in AWAITING_MSG_PAYLOAD with the frame's arguments.
    ps = nats_parser.Parser(nc)
    missing = [name for name in fastparser.PARSER_STATE if not hasattr(ps, name)]
    if missing:
        return f"has no {missing}"
    if not isinstance(ps.buf, bytearray):
        return f"buf is a {type(ps.buf).__name__}, not a bytearray"
    return None


async def _split_msg_state() -> str | None:
    ps = nats_parser.Parser(None)
    await ps.parse(b"MSG a.b 7 r.x 5\r\nab")
    if ps.state != nats_parser.AWAITING_MSG_PAYLOAD:
        return f"state after a split MSG is {ps.state}, not AWAITING_MSG_PAYLOAD"
    arg = ps.msg_arg
    if (arg.get("subject"), arg.get("sid"), arg.get("reply"), ps.needed, ps.header_needed) != (
        b"a.b",
        7,
        b"r.x",
        5,
        0,
    ):
        return f"keeps a split MSG as msg_arg={arg!r}, needed={ps.needed}, header_needed={ps.header_needed}"
    return None


def _parser_constants(_: Client) -> str | None:
    states = [getattr(nats_parser, n, None) for n in ("AWAITING_CONTROL_LINE", "AWAITING_MSG_PAYLOAD")]
    if not all(isinstance(s, int) for s in states) or states[0] == states[1]:
        return f"states are {states}"
    return None


def _parser_api(_: Client) -> str | None:
    if _params(nats_parser.Parser.__init__) != ["self", "nc"]:
        return f"Parser.__init__ takes {_params(nats_parser.Parser.__init__)}, not (self, nc)"
    if not inspect.iscoroutinefunction(nats_parser.Parser.parse):
        return "Parser.parse is no longer a coroutine function"
    return None if callable(getattr(nats_parser.Parser, "reset", None)) else "Parser.reset is gone"


def _msg_fields(_: Client) -> str | None:
    fields = {f.name: f for f in dataclasses.fields(Msg)}
    missing = {"_client", "subject", "reply", "data", "headers", "_metadata", "_ackd", "_sid"} - set(fields)
    if missing:
        return f"has no fields {sorted(missing)}"
    defaults = {name: fields[name].default for name in ("_metadata", "_ackd", "_sid")}
    if defaults != {"_metadata": None, "_ackd": False, "_sid": None}:
        return f"field defaults are {defaults}"
    return None


def _parse_email(_: Client) -> str | None:
    module = vars(nats_client)
    if "parse_email" not in module:
        return "is gone (the fast parser leaves every header block to _process_headers)"
    if module["parse_email"] is not None:
        return "is set: fast_mail_parser is installed (the fast parser leaves every header block to _process_headers)"
    return None


INTERNALS = [
    Internal("Client._process_msg", _coroutine(Client, "_process_msg", router.PROCESS_MSG_PARAMS)),
    Internal("Client._process_headers", _coroutine(Client, "_process_headers", ["headers"])),
    Internal("nats.aio.client.parse_email", _parse_email),
    Internal("Client._send_command", _coroutine(Client, "_send_command", ["cmd"])),
    Internal("Client._flush_pending", _coroutine(Client, "_flush_pending", [])),
    Internal("Client._flush_queue", _attribute("_flush_queue", asyncio.Queue)),
    Internal("Client._max_payload", _attribute("_max_payload", int)),
    Internal("Client._max_pending_size", _attribute("_max_pending_size", int)),
    Internal("Client._pending_data_size", _attribute("_pending_data_size", int)),
    Internal("Client.stats", _stats),
    Internal("Client._ps", _parser),
    Internal("Parser(nc), Parser.parse, Parser.reset", _parser_api),
    Internal("Parser state", _parser_state),
    Internal("AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD", _parser_constants),
    Internal("Msg dataclass fields", _msg_fields),
    Internal("Client._reading_task", _attribute("_reading_task", asyncio.Task)),
]


def _fail(name: str, problem: str) -> None:
    pytest.fail(
        f"nats-py {NATS_PY}: {name} {problem}. The fast path in spark_ml.worker.natsio relies on it "
        "(see that package's docstring): adapt the module using it, or pin nats-py below this version.",
        pytrace=False,
    )


@pytest.mark.parametrize("internal", INTERNALS, ids=[i.name for i in INTERNALS])
async def test_internal_is_there(nc: Client, internal: Internal) -> None:
    problem = internal.check(nc)
    if problem:
        _fail(internal.name, problem)


async def test_parser_keeps_a_split_msg_as_fastparser_expects() -> None:
    problem = await _split_msg_state()
    if problem:
        _fail("Parser", problem)


async def test_subscription_id_is_the_sid_of_its_frames(nc: Client, uid: str) -> None:
    sub = await nc.subscribe(f"i.{uid}")
    sid = getattr(sub, "_id", None)
    if not isinstance(sid, int) or nc._subs.get(sid) is not sub:
        _fail("Subscription._id", f"is {sid!r}, not the id the client files the subscription under")
    await sub.unsubscribe()


async def test_process_headers_reads_an_inline_status_as_jswire_expects(nc: Client) -> None:
    raw = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\n\r\n"
    parsed = await nc._process_headers(raw)
    status = status_of(b"", parsed)
    if status != Status(408, "Request Timeout", 5):
        _fail("Client._process_headers", f"turns {raw!r} into {parsed!r} (status {status}, not 408/5)")
    if not hasattr(Header, "DESCRIPTION"):
        _fail("nats.js.api.Header.DESCRIPTION", "is gone")


async def test_a_jsmsg_works_as_a_msg(nc: Client) -> None:
    msg = JsMsg(nc, "s", b"$JS.ACK.S.C.1.42.7.1700000000000000000.0", b"x", None)
    if msg.metadata.sequence.stream != 42 or msg.is_acked:
        _fail("Msg", "no longer works when its fields are set without the dataclass __init__")


def test_every_internal_the_code_declares_is_checked_here() -> None:
    # The modules name what they check at run time; each of those has its test above.
    checked = " ".join(i.name for i in INTERNALS)
    for name in writer.INTERNALS:
        assert name in checked, f"writer.INTERNALS names {name}: add its check to this file and the docstring"
    assert router.PROCESS_MSG_PARAMS == ["sid", "subject", "reply", "data", "headers"]
    assert fastparser.PARSER_STATE == ("buf", "state", "needed", "header_needed", "msg_arg")


async def test_the_installed_nats_py_takes_every_fast_path(nc: Client) -> None:
    assert router.supported(nc), f"nats-py {NATS_PY}: routing falls back to callbacks"
    assert writer.can_write_raw(nc), f"nats-py {NATS_PY}: frames fall back to Client.publish"
    assert fastparser.install(nc), f"nats-py {NATS_PY}: the client keeps nats-py's parser"


# ---- what happens when they are missing ------------------------------------------------------------


class _ChangedClient(Client):
    """A nats-py whose ``_process_msg`` took other arguments."""

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes, *, extra: object = None
    ) -> None:
        await super()._process_msg(sid, subject, reply, data, headers)


async def test_without_process_msg_subscriptions_keep_their_callbacks(nats_url: str, uid: str) -> None:
    # Given a client whose _process_msg is not the expected one
    nc = _ChangedClient()
    await nc.connect(nats_url, allow_reconnect=False)
    try:
        assert not router.supported(nc)
        direct: list[tuple[str, bytes, dict[str, str] | None]] = []
        raw: list[tuple[bytes, bytes, bytes, dict[str, str] | None]] = []

        async def on_direct(subject: str, data: bytes, headers: dict[str, str] | None) -> None:
            direct.append((subject, data, headers))

        async def on_raw(subject: bytes, reply: bytes, data: bytes, headers: dict[str, str] | None) -> None:
            raw.append((subject, reply, data, headers))

        # When both kinds of subscription are made: neither is routed, and the parser's method stays nats-py's
        _, routed = await directsub.subscribe_direct(
            nc, f"c.{uid}", queue="", handler=on_direct, fast=lambda s, d, h: None
        )
        _, routed_raw = await jsroute.subscribe_raw(nc, f"r.{uid}", on_raw)
        assert not routed and not routed_raw
        assert "_process_msg" not in vars(nc)
        # Then the handlers still see every message, in the same shapes, through nats-py's callbacks
        await nc.publish(f"c.{uid}", b"a", headers={"Content-Type": "application/json"})
        await nc.publish(f"r.{uid}", b"b", reply="re.ply")
        await synced(nc)
        for _ in range(200):
            if direct and raw:
                break
            await asyncio.sleep(0.01)
        assert direct == [(f"c.{uid}", b"a", {"Content-Type": "application/json"})]
        assert raw == [(f"r.{uid}".encode(), b"re.ply", b"b", None)]
    finally:
        await nc.close()


@pytest.mark.parametrize("missing", writer.INTERNALS)
def test_without_a_writer_internal_frames_go_through_publish(missing: str) -> None:
    # The check behind every one-write path (batchpub, jspub, jspull's acks) wants each internal
    present = {name: object() for name in writer.INTERNALS} | {"stats": {}}
    assert writer.can_write_raw(SimpleNamespace(**present))  # type: ignore[arg-type]
    del present[missing]
    assert not writer.can_write_raw(SimpleNamespace(**present))  # type: ignore[arg-type]


async def test_without_the_writer_internals_a_batch_is_published_message_by_message(
    nc: Client, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    got: list[bytes] = []

    async def on(msg: Msg) -> None:
        got.append(msg.data)

    await nc.subscribe(f"w.{uid}", cb=on)
    sent: list[str] = []
    publish = nc.publish

    async def counting(subject: str, payload: bytes = b"", **kw: Any) -> None:
        sent.append(subject)
        await publish(subject, payload, **kw)

    monkeypatch.setattr(writer, "can_write_raw", lambda _: False)
    monkeypatch.setattr(nc, "publish", counting)
    await batchpub.publish_batch(nc, f"w.{uid}", [b"1", b"2", b"3"])
    assert sent == [f"w.{uid}"] * 3
    await synced(nc)
    for _ in range(200):
        if len(got) == 3:
            break
        await asyncio.sleep(0.01)
    assert got == [b"1", b"2", b"3"]


@pytest.mark.parametrize("change", ["not nats-py's Parser", "parser state renamed"])
async def test_without_the_parser_internals_the_client_keeps_its_parser(nc: Client, uid: str, change: str) -> None:
    real = nc._ps
    if change == "not nats-py's Parser":

        class Other(nats_parser.Parser):
            pass

        changed: nats_parser.Parser = Other(nc)
    else:
        changed = nats_parser.Parser(nc)
        del changed.header_needed
    nc._ps = changed
    try:
        assert not fastparser.install(nc)
        assert nc._ps is changed  # nothing taken over
    finally:
        nc._ps = real
    assert type(nc._ps) is nats_parser.Parser
    sub = await nc.subscribe(f"p.{uid}")
    await nc.publish(f"p.{uid}", b"still works")
    assert (await sub.next_msg(timeout=2)).data == b"still works"


async def test_reading_follows_the_read_loop(nc: Client) -> None:
    # fastparser.reading (liveness) tells a running read loop from one that ended while connected
    if not fastparser.reading(nc):
        _fail("Client._reading_task", "is done on a connected client")
    task = nc._reading_task
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)
    if fastparser.reading(nc):
        _fail("Client._reading_task", "is not done after its cancellation")

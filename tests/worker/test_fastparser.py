"""FastParser against nats-py's own parser: the same calls for any protocol stream, split anywhere."""

from __future__ import annotations

import json
from typing import Any

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from spark_ml.worker.natsio.fastparser import FastParser, install
from tests.support.natsync import synced


class Recorder:
    """Stands in for the client: records what a parser dispatches, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.stats = {"in_msgs": 0, "in_bytes": 0}  # kept by the parser for messages taken directly

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        self.calls.append(("msg", sid, bytes(subject), bytes(reply), data, hdr))

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", json.dumps(info, sort_keys=True)))

    async def _process_err(self, err: str) -> None:
        self.calls.append(("err", err))


_token = st.text(alphabet="abcXYZ09._>*-$", min_size=1, max_size=12)
_payload = st.binary(max_size=200)


@st.composite
def _op(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["msg", "msg", "msg", "hmsg", "ping", "pong", "ok", "info", "err"]))
    if kind in ("msg", "hmsg"):
        subject, sid = draw(_token).encode(), draw(st.integers(1, 10**6))
        reply = draw(st.one_of(st.just(b""), _token.map(str.encode)))
        data = draw(_payload)
        mid = b" " + reply if reply else b""
        if kind == "msg":
            return b"MSG %s %d%s %d\r\n%s\r\n" % (subject, sid, mid, len(data), data)
        hdr = b"NATS/1.0\r\nA: %s\r\n\r\n" % draw(_token).encode()
        return b"HMSG %s %d%s %d %d\r\n%s%s\r\n" % (subject, sid, mid, len(hdr), len(hdr) + len(data), hdr, data)
    if kind == "info":
        return b"INFO " + json.dumps({"server_id": draw(_token), "max_payload": 1024}).encode() + b"\r\n"
    if kind == "err":
        return b"-ERR 'Slow Consumer'\r\n"
    return {"ping": b"PING\r\n", "pong": b"PONG\r\n", "ok": b"+OK\r\n"}[kind]


async def _feed(parser: Parser, chunks: list[bytes]) -> None:
    for chunk in chunks:
        await parser.parse(chunk)


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(stream)]:
        out.append(stream[last:p])
        last = p
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(_op(), min_size=1, max_size=30), st.lists(st.integers(0, 10**6), max_size=12))
async def test_same_dispatch_as_nats_py_for_any_split(ops: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(ops)
    chunks = _split(stream, cuts)
    ref, fast = Recorder(), Recorder()
    ref_parser, fast_parser = Parser(ref), FastParser(fast)  # type: ignore[arg-type]  # a recording stand-in
    await _feed(ref_parser, chunks)
    await _feed(fast_parser, chunks)
    assert fast.calls == ref.calls
    assert bytes(fast_parser.buf) == bytes(ref_parser.buf)
    assert fast_parser.state == ref_parser.state


@pytest.mark.parametrize("bad", [b"MSG a\r\n", b"HMSG a 1 2\r\n", b"BOGUS line\r\n"])
async def test_malformed_lines_raise_like_nats_py(bad: bytes) -> None:
    for parser in (Parser(Recorder()), FastParser(Recorder())):  # type: ignore[arg-type]
        with pytest.raises(ProtocolError):
            await parser.parse(bad)


async def test_installed_in_a_live_client(nc: Client, nats_url: str, uid: str) -> None:
    assert install(nc)
    assert isinstance(nc._ps, FastParser)
    assert install(nc)  # idempotent
    got: list[bytes] = []

    async def cb(msg: Any) -> None:
        got.append(msg.data)

    await nc.subscribe(f"p.{uid}", cb=cb)
    await synced(nc)
    other = await nats.connect(nats_url)
    try:
        for i in range(2000):
            await other.publish(f"p.{uid}", b"x" * (i % 300), headers={"N": str(i)} if i % 7 == 0 else None)
        await other.flush()
        await nc.flush()  # PING/PONG goes through the fast parser's hand-over path too
        for _ in range(200):
            if len(got) == 2000:
                break
            await nc.flush()
    finally:
        await other.close()
    assert got == [b"x" * (i % 300) for i in range(2000)]


_FRAMES = (
    b"MSG s.a 1 2\r\nhi\r\n"
    b"HMSG s.b 1 24 26\r\nNATS/1.0\r\nA: 1\r\nA: 2\r\n\r\nho\r\n"  # common: the direct handler
    b"HMSG s.c 1 19 21\r\nNATS/1.0\r\nA:\tb \r\n\r\nhu\r\n"  # odd whitespace: nats-py's routine
    b"HMSG s.d 2 24 26\r\nNATS/1.0\r\nA: 1\r\nA: 2\r\n\r\nha\r\n"  # another subscription: nats-py's path
)


@pytest.mark.parametrize("plain", [True, False], ids=["nats-py-lines", "fast_mail_parser"])
async def test_direct_handlers_take_common_header_blocks_only(plain: bool) -> None:
    client = Recorder()
    parser = FastParser(client)  # type: ignore[arg-type]  # a recording stand-in
    parser.plain_headers = plain  # as matches_nats_py() says with and without fast_mail_parser installed
    taken: list[tuple[bytes, bytes, dict[str, str] | None]] = []

    def fast(subject: bytes, data: bytes, headers: dict[str, str] | None) -> None:
        taken.append((subject, data, headers))

    parser.direct[1] = fast
    await parser.parse(_FRAMES)
    hmsg_b = ("msg", 1, b"s.b", b"", b"ho", b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n")
    rest = [
        ("msg", 1, b"s.c", b"", b"hu", b"NATS/1.0\r\nA:\tb \r\n\r\n"),
        ("msg", 2, b"s.d", b"", b"ha", b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n"),
    ]
    if plain:
        assert taken == [(b"s.a", b"hi", None), (b"s.b", b"ho", {"A": "2"})]
        assert client.calls == rest
        assert client.stats == {"in_msgs": 2, "in_bytes": 4}  # payloads, as Client._process_msg counts
    else:  # nats-py reads header lines through another library: every block is left to it
        assert taken == [(b"s.a", b"hi", None)]
        assert client.calls == [hmsg_b, *rest]
        assert client.stats == {"in_msgs": 1, "in_bytes": 2}
    assert parser.buf == bytearray()

"""parse_block against the installed nats-py's own ``Client._process_headers``, on generated header blocks.

Whatever block parse_block accepts, it reads exactly as nats-py does; everything nats-py rejects, or reads as an
inline status, or reports to its error callback, parse_block declines (the fast parser then hands the message to
nats-py's path). The common blocks our clients send are accepted (else the fast path would never be taken).
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from spark_ml.worker.natsio.headerblock import matches_nats_py, parse_block

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))

_key = st.text(alphabet=_TCHAR, min_size=1, max_size=12)
_value = st.text(alphabet=_PRINTABLE, min_size=1, max_size=40).filter(lambda v: v[0] != " " and v[-1] != " ")


@st.composite
def _common_block(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A block of the shape our clients write, and the dict it stands for (the last repeated key wins)."""
    pairs = draw(st.lists(st.tuples(_key, _value), min_size=1, max_size=6))
    expected = dict(pairs)
    block = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
    return block.encode(), expected


_first = st.sampled_from(
    ["NATS/1.0"] * 12
    + [
        "NATS/1.0 503",
        "NATS/1.0 404 No Messages",
        "NATS/1.0 100 Idle Heartbeat",
        "NATS/1.0 ",
        "NATS/1.1",
        "nats/1.0",
        "NATS/1.0\t",
        "",
    ]
)
_eol = st.sampled_from(["\r\n"] * 12 + ["\n", "\r", "", "\r\n\r\n", " \r\n"])
_sep = st.sampled_from([":", ":  ", ": \t", " : ", "\t: ", "::", " ", ": :", ""])
_odd = st.sampled_from([" "] * 4 + [":"] * 2 + ["\t", "\r", "\n", "\x0b", "\x0c", "\x7f", "\x00", "é", "€", "  ", ": "])


@st.composite
def _bent(draw: st.DrawFn, text: str) -> str:
    """``text`` with odd characters put in at the start, the end or anywhere inside."""
    at = draw(st.sampled_from([0, len(text), draw(st.integers(0, len(text)))]))
    return text[:at] + draw(_odd) + text[at:]


@st.composite
def _line(draw: st.DrawFn) -> str:
    key, value = draw(_key), draw(_value)
    kind = draw(st.sampled_from(["good"] * 4 + ["key", "sep", "value", "empty", "bare"]))
    if kind == "key":
        key = draw(_bent(key))
    elif kind == "value":
        value = draw(_bent(value))
    elif kind == "empty":
        return ""
    elif kind == "bare":
        return draw(_bent(value))  # no separator: a continuation, or garbage
    return key + (draw(_sep) if kind == "sep" else ": ") + value


@st.composite
def _any_block(draw: st.DrawFn) -> bytes:
    """A block mostly of the common shape, bent anywhere: status lines, whitespace, separators, line ends, bytes."""
    lines = draw(st.lists(_line(), max_size=5))
    text = draw(_first) + draw(_eol) + "".join(line + draw(_eol) for line in lines) + draw(_eol)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "latin-1"]))
    block = text.encode(encoding, "replace")
    if draw(st.integers(0, 9)) == 0 and block:  # a byte anywhere, anything
        at = draw(st.integers(0, len(block) - 1))
        block = block[:at] + bytes([draw(st.integers(0, 255))]) + block[at + 1 :]
    return block


class _Reference:
    """The installed nats-py's routine on an unconnected client, its error callback recorded."""

    def __init__(self) -> None:
        self.client = Client()
        self.errors: list[BaseException] = []

        async def on_error(exc: BaseException) -> None:
            self.errors.append(exc)

        self.client._error_cb = on_error

    async def parse(self, block: bytes) -> tuple[str, Any]:
        self.errors.clear()
        try:
            parsed = await self.client._process_headers(block)
        except Exception as exc:
            return "raises", type(exc).__name__
        if self.errors:
            return "reports", self.errors[0]
        return "parsed", parsed


def test_installed_nats_py_reads_header_lines_itself() -> None:
    # With fast_mail_parser installed the fast parser leaves header blocks to nats-py: correct, only slower.
    assert matches_nats_py()


@settings(max_examples=300, deadline=None)
@given(_common_block())
@example((b"NATS/1.0\r\nContent-Type: application/msgpack\r\n\r\n", {"Content-Type": "application/msgpack"}))
@example((b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n", {"A": "2"}))
@example(
    (
        b"NATS/1.0\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nX: a  b\r\n\r\n",
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "X": "a  b"},
    )
)
async def test_common_blocks_are_read_as_nats_py_reads_them(case: tuple[bytes, dict[str, str]]) -> None:
    block, expected = case
    assert await _Reference().parse(block) == ("parsed", expected)
    assert parse_block(block) == expected


@settings(max_examples=1500, deadline=None)
@given(_any_block())
@example(b"NATS/1.0")
@example(b"NATS/1.0\r\n\r\n")
@example(b"NATS/1.0 503\r\n\r\n")
@example(b"NATS/1.0\r\nA:b\r\n\r\n")
@example(b"NATS/1.0\r\nA:  b \r\n\r\n")
@example(b"NATS/1.0\r\n:x\r\n\r\n")
@example(b"NATS/1.0\r\nA: b\r\n\r\nC: d\r\n\r\n")
@example(b"NATS/1.0\r\nA b: c\r\n\r\n")
@example(b"NATS/1.0\r\nA: b \r\n\r\n")
@example(b"NATS/1.0\r\nA:b: c\r\n\r\n")
@example(b"NATS/1.0\r\nA: b\r\n c\r\n\r\n")
@example("NATS/1.0\r\nA: é\r\n\r\n".encode())
async def test_any_block_is_declined_or_read_as_nats_py_reads_it(block: bytes) -> None:
    ours = parse_block(block)
    if ours is None:
        return  # declined: the message takes nats-py's path
    assert await _Reference().parse(block) == ("parsed", ours)
    assert block.startswith(b"NATS/1.0\r\n")  # never an inline status

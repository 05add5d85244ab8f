"""Bytes <-> snapshots and predictions (msgpack by default, JSON when the request is JSON).

Snapshots have one decode path, :class:`SnapshotParser`: the stream's intake and the ``ml.predict`` service
both use it. :func:`decode` and :func:`snapshot_from_mapping` are its readable reference, plain-Python checks
that mirror :class:`spark_ml.core.contracts.MarketSnapshot` rule for rule (``tests/core/test_codec.py`` holds
them to the pydantic model, and the parser to them, with hypothesis). Any failure raises
:class:`~spark_ml.core.errors.InvalidInput` carrying the raw bytes, so the transport can dead-letter the
message unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from spark_ml.core.contracts import MAX_TS, SYMBOL_MAX_LEN, valid_symbol
from spark_ml.core.errors import InvalidInput, PayloadTooLarge
from spark_ml.core.subjects import symbol_from_subject

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_MAX_PAYLOAD",
    "OCTET_STREAM",
    "OutputEncoding",
    "SnapshotParser",
    "MAX_TS",
    "Encoding",
    "Snapshot",
    "decode",
    "detect_encoding",
    "encode",
    "prediction_wire",
    "snapshot_from_mapping",
]

Encoding = Literal["msgpack", "json"]
OutputEncoding = Literal["auto", "msgpack", "json"]
"""The encoding of what spark-ml publishes: ``auto`` answers each input in its own encoding."""
CONTENT_TYPES: dict[Encoding, str] = {"json": "application/json", "msgpack": "application/msgpack"}
"""The ``Content-Type`` header of each wire encoding, on every message spark-ml publishes."""
OCTET_STREAM = "application/octet-stream"
"""The ``Content-Type`` of a dead letter whose payload was never read (undecodable, too large, or cut to fit)."""
DEFAULT_MAX_PAYLOAD = 64 * 1024

_INF = math.inf
_OPTIONAL_NON_NEGATIVE = (("spreadBp", "spread_bp"), ("vol1m", "vol1m"), ("bid", "bid"), ("ask", "ask"))


@dataclass(slots=True, eq=False, repr=False)
class Snapshot:
    """A validated snapshot on its way through the pipeline (the hot path's light twin of MarketSnapshot).

    Compared by identity (``eq=False``): two arrivals of equal data are two messages to settle.

    Args:
        ts: epoch milliseconds.
        mid: mid price, finite and > 0.
        symbol: resolved symbol (payload, else subject token, else ``"_"``).
        spread_bp: spread in basis points, or None when unknown.
        vol1m: volume over the last minute or bar, or None.
        rsi14: RSI(14) carried by the publisher, or None (then it is computed from history).
        encoding: the encoding the snapshot arrived in; the prediction goes out in the same one.
        recv: ``time.perf_counter()`` when the transport received it.
        raw: the payload as received, dead-lettered unchanged if a later stage refuses the snapshot.
        subject: the subject it arrived on.
        ctx: opaque transport context (the JetStream message to acknowledge), never read by core.
        trace: the well-formed W3C ``traceparent`` the message carried, or None (set by the transport).
    """

    ts: int
    mid: float
    symbol: str
    spread_bp: float | None = None
    vol1m: float | None = None
    rsi14: float | None = None
    encoding: Encoding = "msgpack"
    recv: float = 0.0
    raw: bytes = b""
    subject: str = ""
    ctx: object = None
    trace: str | None = None

    def __repr__(self) -> str:
        return f"Snapshot(ts={self.ts}, mid={self.mid}, symbol={self.symbol!r})"


def detect_encoding(raw: bytes, content_type: str | None = None) -> Encoding:
    """JSON when the content type says so or the payload starts with ``{``; msgpack otherwise."""
    if content_type is not None and "json" in content_type:
        return "json"
    return "json" if raw[:1] == b"{" else "msgpack"


def decode(
    raw: bytes, *, content_type: str | None = None, max_bytes: int = DEFAULT_MAX_PAYLOAD
) -> tuple[Any, Encoding]:
    """Parse a payload into plain Python data, returning it with the encoding it came in."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"payload is {len(raw)} bytes, the limit is {max_bytes}", raw=raw)
    if not raw:
        raise InvalidInput("empty payload", code="decode", raw=raw)
    encoding = detect_encoding(raw, content_type)
    try:
        if encoding == "json":
            return json.loads(raw), encoding
        return msgpack.unpackb(raw, raw=False, strict_map_key=False), encoding
    except Exception as exc:  # every decoder failure is the sender's fault: one error type for all
        raise InvalidInput(f"not valid {encoding}: {type(exc).__name__}: {exc}", code="decode", raw=raw) from exc


def encode(obj: Any, encoding: Encoding) -> bytes:
    """Serialize plain data in the given encoding."""
    if encoding == "json":
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def _bad(field: str, rule: str, raw: bytes | None) -> InvalidInput:
    return InvalidInput(f"{field}: {rule}", code="schema", raw=raw)


def _number(d: Mapping[str, Any], key: str, raw: bytes | None) -> float | None:
    """An optional finite non-negative number (bool is not a number here, as in pydantic strict mode)."""
    value: Any = d.get(key)
    if value is None:
        return None
    kind = type(value)
    if kind is int:
        value = float(value) if -1e300 < value < 1e300 else _INF
    elif kind is not float:
        raise _bad(key, "must be a number", raw)
    if not 0.0 <= value < _INF:
        raise _bad(key, "must be finite and >= 0", raw)
    return float(value)


def _rsi(rsi: Any, raw: bytes | None) -> float | None:
    if rsi is None:
        return None
    kind = type(rsi)
    if kind is not float and kind is not int:
        raise _bad("rsi14", "must be a number", raw)
    if not 0 <= rsi <= 100:
        raise _bad("rsi14", "must be between 0 and 100", raw)
    return float(rsi)


_SYMBOL_RULE = f"must be 1..{SYMBOL_MAX_LEN} printable characters without spaces"


def _symbol(symbol: Any, subject_symbol: str | None, raw: bytes | None) -> str:
    if symbol is None:
        if subject_symbol is None:
            return "_"
        # The subject's token is as much the sender's input as the payload: same rule, same refusal.
        if not valid_symbol(subject_symbol):
            raise _bad("symbol", f"the subject's last token {_SYMBOL_RULE}", raw)
        return subject_symbol
    if type(symbol) is not str or not valid_symbol(symbol):
        raise _bad("symbol", _SYMBOL_RULE, raw)
    return symbol


def snapshot_from_mapping(
    d: Any,
    *,
    subject_symbol: str | None = None,
    raw: bytes | None = None,
    encoding: Encoding = "msgpack",
    recv: float = 0.0,
    subject: str = "",
    ctx: object = None,
) -> Snapshot:
    """Validate decoded data against the MarketSnapshot rules and resolve the symbol."""
    if type(d) is not dict:
        raise _bad("snapshot", "must be a map/object", raw)
    ts = d.get("ts")
    if type(ts) is not int:
        raise _bad("ts", "required, an integer (epoch milliseconds)", raw)
    if not 0 <= ts <= MAX_TS:
        raise _bad("ts", f"must be between 0 and {MAX_TS}", raw)
    mid = _mid(d.get("mid"), raw)
    spread_bp = _number(d, "spreadBp", raw)
    vol1m = _number(d, "vol1m", raw)
    for key in ("bid", "ask", "volume"):
        _number(d, key, raw)
    rsi = _rsi(d.get("rsi14"), raw)
    symbol = _symbol(d.get("symbol"), subject_symbol, raw)
    if vol1m is None:
        vol1m = _number(d, "volume", raw)
    return Snapshot(ts, mid, symbol, spread_bp, vol1m, rsi, encoding, recv, raw or b"", subject, ctx)


def prediction_wire(
    snap: Snapshot,
    score: float,
    signal: str,
    confidence: float,
    model_version: str,
    feature_names: Sequence[str],
    row: Sequence[float],
    latency_ms: float,
) -> dict[str, Any]:
    """The Prediction contract as plain data, ready for :func:`encode` (built by hand: it is on the hot path)."""
    return {
        "ts": snap.ts,
        "symbol": snap.symbol,
        "score": score,
        "signal": signal,
        "confidence": confidence,
        "modelVersion": model_version,
        "features": dict(zip(feature_names, row, strict=True)),
        "latencyMs": latency_ms,
    }


class SnapshotParser:
    """The one decode path of snapshots: the stream's intake and the ``ml.predict`` service both use it.

    :meth:`parse` is :func:`decode` then :func:`snapshot_from_mapping` in one call; :meth:`decode` and
    :meth:`validate` are its two steps, for a snapshot carried inside a request. Same outcome for every
    input (``tests/core/test_codec.py`` holds it to the two-step reference with hypothesis), less work:
    msgpack is decoded without the dispatch, and the symbol checks are remembered per symbol and per
    subject (bounded, so hostile churn cannot grow them).

    Args:
        max_bytes: larger payloads are refused with :class:`~spark_ml.core.errors.PayloadTooLarge`.
    """

    __slots__ = ("_subjects", "_symbols", "max_bytes")

    def __init__(self, max_bytes: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_bytes = max_bytes
        self._symbols: dict[str, str] = {}
        self._subjects: dict[str, str] = {}

    def parse(self, raw: bytes, subject: str, content_type: str | None, recv: float, ctx: object = None) -> Snapshot:
        """Validate one payload; raises :class:`InvalidInput` (with the raw bytes) like the reference."""
        data, encoding = self.decode(raw, content_type)
        return self.validate(data, raw, subject, encoding, recv, ctx)

    def validate(
        self, data: Any, raw: bytes, subject: str, encoding: Encoding, recv: float, ctx: object = None
    ) -> Snapshot:
        """Check decoded data against the MarketSnapshot rules (:func:`snapshot_from_mapping`'s outcome).

        ``raw`` is what a refusal carries (the whole message, for a snapshot inside a request); the symbol
        falls back to the subject's token, then ``"_"``.
        """
        if type(data) is not dict:
            raise _bad("snapshot", "must be a map/object", raw)
        get = data.get
        ts = get("ts")
        if type(ts) is not int:
            raise _bad("ts", "required, an integer (epoch milliseconds)", raw)
        if not 0 <= ts <= MAX_TS:
            raise _bad("ts", f"must be between 0 and {MAX_TS}", raw)
        mid: Any = get("mid")
        if type(mid) is float:
            if not 0.0 < mid < _INF:
                raise _bad("mid", "must be finite and > 0", raw)
        else:
            mid = _mid(mid, raw)
        spread_bp = _number(data, "spreadBp", raw)
        vol1m = _number(data, "vol1m", raw)
        symbol: Any = get("symbol")
        seen = 2 + (spread_bp is not None) + (vol1m is not None) + (symbol is not None)
        rsi = None
        if len(data) > seen:  # other keys are present: check the rarely sent fields as the reference does
            for key in ("bid", "ask", "volume"):
                _number(data, key, raw)
            rsi = _rsi(get("rsi14"), raw)
            if vol1m is None:
                vol1m = _number(data, "volume", raw)
        if symbol is None:
            symbol = self._subjects.get(subject) or self._subject_symbol(subject, raw)
        elif type(symbol) is not str or self._symbols.get(symbol) is None:
            symbol = _symbol(symbol, None, raw)
            if len(self._symbols) >= _CACHE_MAX:
                self._symbols.clear()
            self._symbols[symbol] = symbol
        return Snapshot(ts, mid, symbol, spread_bp, vol1m, rsi, encoding, recv, raw, subject, ctx)

    def decode(self, raw: bytes, content_type: str | None) -> tuple[Any, Encoding]:
        """:func:`decode` with this parser's size limit, msgpack taking a shorter way."""
        if content_type is not None or len(raw) > self.max_bytes or not raw or raw[0] == 0x7B:  # 0x7b: "{"
            return decode(raw, content_type=content_type, max_bytes=self.max_bytes)
        try:
            return _unpackb(raw, raw=False, strict_map_key=False), "msgpack"
        except Exception as exc:
            raise InvalidInput(f"not valid msgpack: {type(exc).__name__}: {exc}", code="decode", raw=raw) from exc

    def _subject_symbol(self, subject: str, raw: bytes) -> str:
        """The symbol a subject resolves to; only valid ones are remembered, so a refusal is never cached."""
        symbol = _symbol(None, symbol_from_subject(subject), raw)
        if len(self._subjects) >= _CACHE_MAX:
            self._subjects.clear()
        self._subjects[subject] = symbol
        return symbol


_CACHE_MAX = 16_384
_unpackb = msgpack.unpackb


def _mid(mid: Any, raw: bytes | None) -> float:
    kind = type(mid)
    if kind is int:
        mid = float(mid) if -1e300 < mid < 1e300 else _INF
    elif kind is not float:
        raise _bad("mid", "required, a number", raw)
    if not 0.0 < mid < _INF:
        raise _bad("mid", "must be finite and > 0", raw)
    return float(mid)

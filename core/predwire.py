"""Predictions straight to msgpack bytes: the stream's hand-written encoder.

Building a dict per prediction and handing it to ``msgpack.packb`` cost about 5 us a message, a third
of the budget. A prediction's shape is fixed per model (the same keys, the same feature names), so all
of its numbers go through one precompiled :class:`struct.Struct` whose constant fields are the map
keys and type markers; the variable-length strings (signal, model version, symbol) follow as
pre-encoded tails. Map order is free in msgpack, so the output decodes to exactly the dict of
:func:`spark_ml.core.codec.prediction_wire` (``tests/core/test_predwire.py`` holds it to ``msgpack.packb`` with
hypothesis). JSON predictions are rare and keep the dict path.

Under load a batch holds hundreds of predictions: :meth:`PredictionPacker.pack_many` writes the numbers
of all of them at once, column by column, into a numpy record array laid out byte for byte as the
struct (same bytes as :meth:`~PredictionPacker.pack`, which the tests check), so a prediction costs
one slice and one join instead of a ``struct.pack`` call with a dozen arguments.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["PredictionPacker", "mp_str"]

_SIGNALS = ("buy", "sell", "hold")


def mp_str(text: str) -> bytes:
    """A msgpack str (the smallest header that fits, as msgpack-python writes it)."""
    data = text.encode("utf-8")
    n = len(data)
    if n < 32:
        return bytes((0xA0 | n,)) + data
    if n < 256:
        return b"\xd9" + bytes((n,)) + data
    if n < 65536:
        return b"\xda" + n.to_bytes(2, "big") + data
    return b"\xdb" + n.to_bytes(4, "big") + data


def _map_header(n: int) -> bytes:
    return bytes((0x80 | n,)) if n < 16 else b"\xde" + n.to_bytes(2, "big")


class PredictionPacker:
    """Encodes the predictions of one model version.

    Args:
        model_version: the ``modelVersion`` every prediction of this packer carries.
        feature_names: the model's features, in the order of its input columns.
    """

    __slots__ = (
        "_args",
        "_block",
        "_dtype",
        "_n_consts",
        "_struct",
        "_symbols",
        "_tails",
        "_template",
        "feature_names",
        "model_version",
    )

    def __init__(self, model_version: str, feature_names: Sequence[str]) -> None:
        self.model_version = model_version
        self.feature_names = tuple(feature_names)
        names = self.feature_names
        # Numbers first, each behind its constant key and type marker (0xcf uint64, 0xcb float64).
        consts = [
            _map_header(8) + mp_str("ts") + b"\xcf",
            mp_str("score") + b"\xcb",
            mp_str("confidence") + b"\xcb",
            mp_str("latencyMs") + b"\xcb",
        ]
        if names:
            consts.append(mp_str("features") + _map_header(len(names)) + mp_str(names[0]) + b"\xcb")
            consts += [mp_str(n) + b"\xcb" for n in names[1:]]
        fmt = ">" + "".join(f"{len(c)}s{'Q' if i == 0 else 'd'}" for i, c in enumerate(consts))
        if not names:
            fmt += f"{len(mp_str('features')) + 1}s"
        self._struct = struct.Struct(fmt)
        args: list[object] = [None] * (2 * len(consts))
        args[0::2] = consts
        if not names:
            args.append(mp_str("features") + _map_header(0))
        self._args = args
        # The same layout as a record: constant byte fields k<i>, numbers v<i> (big-endian as in the struct).
        fields: list[tuple[str, str]] = []
        for i, c in enumerate(consts):
            fields += [(f"k{i}", f"V{len(c)}"), (f"v{i}", ">u8" if i == 0 else ">f8")]
        if not names:
            fields.append(("kf", f"V{len(mp_str('features')) + 1}"))
        self._dtype = np.dtype(fields)
        assert self._dtype.itemsize == self._struct.size  # packed: no alignment padding
        zeros = [0 if a is None else a for a in args]
        self._template = np.frombuffer(self._struct.pack(*zeros), dtype=self._dtype)
        self._n_consts = len(consts)
        self._block = np.repeat(self._template, 256)
        version = mp_str("modelVersion") + mp_str(model_version)
        self._tails = {s: mp_str("signal") + mp_str(s) + version for s in _SIGNALS}
        self._symbols: dict[str, bytes] = {}

    def pack(
        self,
        ts: int,
        symbol: str,
        score: float,
        signal: str,
        confidence: float,
        row: Sequence[float],
        latency_ms: float,
    ) -> bytes:
        """One prediction as msgpack; ``row`` holds the values of :attr:`feature_names`."""
        args = self._args[:]
        args[1] = ts
        args[3] = score
        args[5] = confidence
        args[7] = latency_ms
        args[9 : 9 + 2 * len(row) : 2] = row
        return self._struct.pack(*args) + self._tails[signal] + self._symbol(symbol)

    def _symbol(self, symbol: str) -> bytes:
        sym = self._symbols.get(symbol)
        if sym is None:
            sym = mp_str("symbol") + mp_str(symbol)
            if len(self._symbols) < 16_384:  # hostile symbol churn must not grow it without bound
                self._symbols[symbol] = sym
        return sym

    def pack_many(
        self,
        ts: Sequence[int],
        symbols: Sequence[str],
        scores: NDArray[np.float64],
        signals: Sequence[str],
        rows: NDArray[np.float64],
        latency_ms: Sequence[float] | NDArray[np.float64],
    ) -> list[bytes]:
        """``pack`` for every row at once (confidence computed as in the engine); the same bytes."""
        n = len(ts)
        if len(self._block) < n:  # copying a slice of a ready block is 15x cheaper than np.repeat per batch
            self._block = np.repeat(self._template, max(n, 2 * len(self._block)))
        rec = self._block[:n].copy()
        rec["v0"] = ts
        rec["v1"] = scores
        rec["v2"] = np.abs(scores - 0.5) * 2.0
        rec["v3"] = latency_ms
        for j in range(self._n_consts - 4):
            rec[f"v{j + 4}"] = rows[:, j]
        size = self._dtype.itemsize
        view = rec.view(np.uint8).data
        tails, symbol_of = self._tails, self._symbol
        join = b"".join
        return [join((view[i * size : (i + 1) * size], tails[signals[i]], symbol_of(symbols[i]))) for i in range(n)]

"""The hand-written prediction encoder against ``msgpack.packb`` of the contract's dict."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spark_ml.core.codec import Snapshot, encode, prediction_wire
from spark_ml.core.contracts import SYMBOL_MAX_LEN, Prediction, valid_symbol
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.predwire import PredictionPacker, mp_str

_floats = st.floats(allow_nan=False, allow_infinity=False)
_symbol = st.text(min_size=1, max_size=SYMBOL_MAX_LEN).filter(valid_symbol)


@settings(max_examples=300, deadline=None)
@given(
    ts=st.integers(min_value=0, max_value=2**53),
    symbol=_symbol,
    score=st.floats(min_value=0, max_value=1),
    signal=st.sampled_from(["buy", "sell", "hold"]),
    version=st.text(min_size=1, max_size=300),
    names=st.lists(st.sampled_from(FEATURE_NAMES), unique=True, max_size=len(FEATURE_NAMES)),
    data=st.data(),
)
def test_same_object_as_packb(
    ts: int, symbol: str, score: float, signal: str, version: str, names: list[str], data: st.DataObject
) -> None:
    row = data.draw(st.lists(_floats, min_size=len(names), max_size=len(names)))
    latency = data.draw(st.floats(min_value=0, max_value=1e6))
    confidence = abs(score - 0.5) * 2
    snap = Snapshot(ts, 1.0, symbol)
    want = encode(prediction_wire(snap, score, signal, confidence, version, names, row, latency), "msgpack")
    got = PredictionPacker(version, names).pack(ts, symbol, score, signal, confidence, row, latency)
    assert msgpack.unpackb(got) == msgpack.unpackb(want)


def test_output_is_a_valid_prediction_and_reuses_symbols() -> None:
    packer = PredictionPacker("lgbm-0123abcd", FEATURE_NAMES)
    row = [float(i) for i in range(len(FEATURE_NAMES))]
    first = packer.pack(1696723200000, "BTCUSD", 0.7, "buy", 0.4, row, 0.25)
    again = packer.pack(1696723200000, "BTCUSD", 0.7, "buy", 0.4, row, 0.25)
    assert first == again
    p = Prediction.model_validate(msgpack.unpackb(first))
    assert (p.symbol, p.signal, p.model_version, p.features["macd"]) == ("BTCUSD", "buy", "lgbm-0123abcd", 4.0)


def test_string_headers_match_msgpack() -> None:
    for n in (0, 1, 31, 32, 255, 256, 65535, 65536):
        text = "x" * n
        assert mp_str(text) == msgpack.packb(text)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=600),
    names=st.lists(st.sampled_from(FEATURE_NAMES), unique=True, max_size=len(FEATURE_NAMES)),
    version=st.text(min_size=1, max_size=40),
    data=st.data(),
)
def test_pack_many_is_pack_for_every_row(n: int, names: list[str], version: str, data: st.DataObject) -> None:

    ts = data.draw(st.lists(st.integers(min_value=0, max_value=2**63), min_size=n, max_size=n))
    symbols = data.draw(st.lists(st.sampled_from(["EURUSD", "BTCUSD", "x" * 40, "É"]), min_size=n, max_size=n))
    # numpy arrays drawn whole (hypothesis.extra.numpy): lists of floats drawn one by one took 25 s a run
    scores = data.draw(arrays(np.float64, n, elements=st.floats(min_value=0, max_value=1)))
    signals = data.draw(st.lists(st.sampled_from(["buy", "sell", "hold"]), min_size=n, max_size=n))
    rows = data.draw(arrays(np.float64, (n, len(names)), elements=st.floats()))
    lat = data.draw(arrays(np.float64, n, elements=st.floats(min_value=0, max_value=1e6)))
    packer = PredictionPacker(version, names)
    got = packer.pack_many(ts, symbols, scores, signals, rows, lat)
    want = [
        packer.pack(t, sym, s, sig, abs(s - 0.5) * 2.0, r, ms)
        for t, sym, s, sig, r, ms in zip(
            ts, symbols, scores.tolist(), signals, rows.tolist(), lat.tolist(), strict=True
        )
    ]
    assert got == want
    assert packer.pack_many(ts, symbols, scores, signals, rows, lat) == want  # the reused block holds no state

"""Feature state handed over: the C kernel and the Python twin read each other's state, bit for bit.

A partition's new owner restores the states its old owner checkpointed, maybe with the other
implementation (a machine without a compiler runs the Python twin). Both then have to go on exactly as the
writer would have: the rows after the hand-over are compared bit for bit, as tests/core/test_featkernel.py
compares the two implementations.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_ml.core.codec import Snapshot
from spark_ml.core.errors import InvalidInput
from spark_ml.core.features import FeatureStore, SymbolState, new_state, restore_state
from spark_ml.core.features import _featkernel as kernel
from spark_ml.core.features.checkpoint import decode_checkpoint, encode_checkpoint
from spark_ml.core.features.layout import STATE_FIELDS, check_state
from spark_ml.core.ml.sources import load
from tests.support.featseries import bits, run, series


def _state_bits(state: tuple[Any, ...]) -> list[object]:
    """A state with every float as its bits (NaN as one NaN, see _bits); integers as they are."""
    out: list[object] = []
    for v in state:
        if isinstance(v, tuple | list):
            out.append(bits(list(v)))
        elif isinstance(v, float):
            out.extend(bits([v]))
        else:
            out.append(v)
    return out


@settings(max_examples=250, deadline=None)
@given(snaps=series(), cut=st.integers(0, 90))
def test_a_state_handed_over_either_way_goes_on_bit_for_bit(snaps: list[Snapshot], cut: int) -> None:
    head, tail = snaps[:cut], snaps[cut:]
    # Given both implementations after the same snapshots
    c, py = kernel.SymbolState(), SymbolState()
    assert run(c, head) == run(py, head)
    # Then they write the same state
    c_state, py_state = c.to_state(), py.to_state()
    assert len(c_state) == len(STATE_FIELDS)
    assert _state_bits(c_state) == _state_bits(py_state)
    # When each state goes through a checkpoint and is read by the other implementation (and by its own)
    seq, states = decode_checkpoint(encode_checkpoint(7, {"C": c_state, "P": py_state}))
    assert seq == 7
    py_from_c, c_from_py = SymbolState.from_state(states["C"]), kernel.SymbolState.from_state(states["P"])
    c_from_c, py_from_py = kernel.SymbolState.from_state(states["C"]), SymbolState.from_state(states["P"])
    # Then all of them go on exactly as the writers do
    want = run(c, tail)
    assert run(py, tail) == want
    for restored in (py_from_c, c_from_py, c_from_c, py_from_py):
        assert run(restored, tail) == want
    assert _state_bits(py_from_c.to_state()) == _state_bits(c.to_state())
    assert _state_bits(c_from_py.to_state()) == _state_bits(c.to_state())


def test_a_state_handed_over_on_real_prices_goes_on_unchanged() -> None:
    snaps = load("eurusd").snapshots[:400]
    for cut in (0, 1, 5, 19, 20, 21, 26, 35, 137):
        c = new_state()
        for s in snaps[:cut]:
            c.update(s)
        (_, states) = decode_checkpoint(encode_checkpoint(cut, {"EURUSD": c.to_state()}))
        py = SymbolState.from_state(states["EURUSD"])
        back = kernel.SymbolState.from_state(py.to_state())
        for s in snaps[cut:]:
            want = c.update(s)
            assert py.update(s) == want and back.update(s) == want, cut
        assert c.to_state() == py.to_state() == back.to_state()


def test_a_fresh_state_round_trips() -> None:
    fresh = SymbolState().to_state()
    assert fresh == kernel.SymbolState().to_state()
    assert kernel.SymbolState.from_state(fresh).to_state() == fresh
    assert (SymbolState.from_state(fresh).n, SymbolState.from_state(fresh).last_ts) == (0, -1)


def _valid() -> tuple[Any, ...]:
    c = kernel.SymbolState()
    for i in range(23):
        c.update(Snapshot(i, 1.0 + i % 5 * 0.01, "S"))
    return c.to_state()


def _with(state: tuple[Any, ...], k: int, value: object) -> list[Any]:
    out = list(state)
    out[k] = value
    return out


_BAD: list[tuple[str, object]] = [
    ("not a sequence", "state"),
    ("too short", _valid()[:-1]),
    ("too long", (*_valid(), 0)),
    ("n negative", _with(_valid(), 18, -1)),
    ("n a bool", _with(_valid(), 18, True)),
    ("n a float", _with(_valid(), 18, 23.0)),
    ("n past 64 bits", _with(_valid(), 18, 2**63)),
    ("last_ts past 64 bits", _with(_valid(), 17, 2**63)),
    ("last_ts a string", _with(_valid(), 17, "22")),
    ("logs not matching n", _with(_valid(), 0, [0.0, 0.0])),
    ("too many logs", _with(_valid(), 0, [0.0] * 6)),
    ("logs not a sequence", _with(_valid(), 0, 1.0)),
    ("a log a string", _with(_valid(), 0, ["x"] * 5)),
    ("window too short", _with(_valid(), 1, [0.0] * 19)),
    ("window too long", _with(_valid(), 6, [0.0] * 21)),
    ("window slot out of range", _with(_valid(), 2, 20)),
    ("window slot negative", _with(_valid(), 7, -1)),
    ("window slot not matching n", _with(_valid(), 7, 4)),
    ("a float a bool", _with(_valid(), 11, False)),
    ("a float None", _with(_valid(), 13, None)),
    ("a float an int past a double", _with(_valid(), 14, 10**400)),
    ("a sum a string", _with(_valid(), 4, "1.0")),
]


@pytest.mark.parametrize(("name", "state"), _BAD, ids=[n for n, _ in _BAD])
def test_both_refuse_what_is_not_a_state(name: str, state: Any) -> None:
    for reader in (kernel.SymbolState.from_state, SymbolState.from_state, check_state):
        with pytest.raises(ValueError, match="feature state"):
            reader(state)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_both_agree_on_what_is_a_state(data: st.DataObject) -> None:
    # Any field replaced by anything: both readers accept it or both refuse it, and never crash.
    state = list(_valid())
    for _ in range(data.draw(st.integers(1, 3))):
        k = data.draw(st.integers(0, len(state) - 1))
        state[k] = data.draw(
            st.one_of(
                st.integers(-(2**65), 2**65),
                st.floats(),
                st.booleans(),
                st.none(),
                st.text(max_size=3),
                st.lists(st.floats(), max_size=22),
                st.lists(st.integers(-3, 3), max_size=22),
            )
        )
    outcomes: list[object] = []
    for reader in (kernel.SymbolState.from_state, SymbolState.from_state):
        try:
            outcomes.append(_state_bits(reader(state).to_state()))
        except ValueError:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]


def test_the_store_exports_restores_and_drops() -> None:
    snaps = load("eurusd").snapshots[:200]
    store = FeatureStore()
    for i, s in enumerate(snaps[:100]):
        store.update(Snapshot(s.ts, s.mid, f"S{i % 4}"))
    assert store.symbols() == ["S0", "S1", "S2", "S3"]
    exported = store.export(["S1", "S3", "NOPE"])
    assert sorted(exported) == ["S1", "S3"]
    # A new owner restores two of them and goes on as the old owner does
    other = FeatureStore()
    other.restore(exported)
    for s in snaps[100:]:
        snap = Snapshot(s.ts, s.mid, "S3")
        assert other.update(snap) == store.update(snap)
    # A bad state restores nothing
    with pytest.raises(ValueError):
        other.restore({"S9": exported["S1"], "S8": ("junk",)})
    assert "S9" not in other and "S8" not in other
    # Dropping forgets; the bound still holds after a restore
    store.drop(["S0", "S2", "NOPE"])
    assert store.symbols() == ["S1", "S3"]
    small = FeatureStore(max_symbols=2)
    small.restore({"A": exported["S1"], "B": exported["S1"], "C": exported["S3"]})
    assert small.symbols() == ["B", "C"]
    assert restore_state(exported["S1"]).n == 25


def test_a_checkpoint_round_trips_and_garbage_is_invalid_input() -> None:
    state = _valid()
    seq, states = decode_checkpoint(encode_checkpoint(2**63, {"BRK.B": state, "€": state}))
    assert seq == 2**63 and states == {"BRK.B": state, "€": state}
    assert decode_checkpoint(encode_checkpoint(0, {})) == (0, {})
    good = msgpack.unpackb(encode_checkpoint(3, {"S": state}))
    garbage = [
        b"",
        b"\xc1",
        b"not msgpack at all",
        encode_checkpoint(3, {"S": state}) + b"\x00",
        msgpack.packb([1, 3, {}]),
        msgpack.packb({**good, "v": 2}),
        msgpack.packb({**good, "layout": 99}),
        msgpack.packb({**good, "seq": -1}),
        msgpack.packb({**good, "seq": True}),
        msgpack.packb({**good, "states": []}),
        msgpack.packb({**good, "states": {"S": list(state)[:-1]}}),
        msgpack.packb({**good, "states": {1: list(state)}}),
    ]
    for raw in garbage:
        with pytest.raises(InvalidInput) as info:
            decode_checkpoint(raw)
        assert info.value.code == "checkpoint", raw
    with pytest.raises(ValueError):
        encode_checkpoint(-1, {})


def test_floats_travel_as_doubles() -> None:
    # -0.0, a subnormal, the largest double and a NaN come back with their bits, in either reader
    odd = {3: -0.0, 13: 5e-324, 14: 1.7976931348623157e308, 15: math.nan, 16: -math.inf}
    state = list(SymbolState().to_state())
    for k, v in odd.items():
        state[k] = v
    (_, states) = decode_checkpoint(encode_checkpoint(1, {"S": state}))
    for restored in (
        states["S"],
        SymbolState.from_state(states["S"]).to_state(),
        kernel.SymbolState.from_state(states["S"]).to_state(),
    ):
        assert [struct.pack("<d", restored[k]) for k in odd] == [struct.pack("<d", v) for v in odd.values()]

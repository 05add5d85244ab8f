"""The batch engine: one model call per batch, refused rows with reasons, output range checks, commit/peek."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from spark_ml.core.codec import Snapshot
from spark_ml.core.engine import Engine, SignalPolicy
from spark_ml.core.errors import InvalidInput, ModelError
from spark_ml.core.models import BaselineModel


class _Fixed:
    """A model returning whatever it is told to, counting its calls."""

    kind = "test"
    feature_names = ("ret_1", "rsi_14")

    def __init__(self, out: NDArray[np.float64] | Exception, version: str = "fixed") -> None:
        self.out = out
        self.version = version
        self.calls = 0

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        self.calls += 1
        if isinstance(self.out, Exception):
            raise self.out
        return self.out[: len(x)]


def snaps(n: int, symbol: str = "A", start: int = 0) -> list[Snapshot]:
    return [Snapshot(start + i, 100.0 + i, symbol) for i in range(n)]


def test_one_model_call_per_batch_and_signals() -> None:
    model = _Fixed(np.array([0.9, 0.5, 0.1, 0.56]))
    result = Engine(model).run_batch(snaps(4))
    assert model.calls == 1
    assert result.signals == ["buy", "hold", "sell", "buy"]
    assert result.x.shape == (4, 2) and result.full.shape[0] == 4
    wires = result.wire(0.0)
    assert [w["confidence"] for w in wires] == pytest.approx([0.8, 0.0, 0.8, 0.12])


def test_model_failure_rejects_the_batch_with_model_error() -> None:
    result = Engine(_Fixed(RuntimeError("boom"))).run_batch(snaps(3))
    assert not result.snaps and len(result.rejected) == 3
    assert all(isinstance(e, ModelError) and "boom" in e.message for _, e in result.rejected)


def test_out_of_range_scores_are_blocked_and_the_rest_published() -> None:
    result = Engine(_Fixed(np.array([0.2, np.nan, 1.5, 0.7]))).run_batch(snaps(4))
    assert [s.ts for s in result.snaps] == [0, 3]
    assert {e.code for _, e in result.rejected} == {"model_output"}


def test_wrong_shape_is_a_model_error() -> None:
    result = Engine(_Fixed(np.array([[0.5, 0.5]]))).run_batch(snaps(1))
    assert isinstance(result.rejected[0][1], ModelError)


def test_unknown_feature_name_is_refused_at_swap() -> None:
    engine = Engine(BaselineModel())
    bad = _Fixed(np.array([0.5]))
    bad.feature_names = ("no_such_feature",)  # type: ignore[assignment]
    with pytest.raises(ModelError):
        engine.model = bad
    assert engine.model.version == "baseline"


def test_peek_does_not_advance_state_commit_does() -> None:
    engine = Engine(BaselineModel())
    engine.run_batch(snaps(5))
    before = engine.features.state("A").n
    engine.run_batch([Snapshot(10, 200.0, "A")], commit=False)
    assert engine.features.state("A").n == before
    engine.run_batch([Snapshot(10, 200.0, "A")])
    assert engine.features.state("A").n == before + 1


def test_out_of_order_rows_are_rejected_others_scored() -> None:
    engine = Engine(BaselineModel())
    engine.run_batch(snaps(3))
    result = engine.run_batch([Snapshot(1, 1.0, "A"), Snapshot(5, 1.0, "A"), Snapshot(0, 1.0, "B")])
    assert [s.symbol for s in result.snaps] == ["A", "B"]
    assert isinstance(result.rejected[0][1], InvalidInput) and result.rejected[0][1].code == "out_of_order"


def test_extreme_prices_never_produce_non_finite_output() -> None:
    engine = Engine(BaselineModel())
    prices = [1e-300, 1e300, 1e-300, 1e300, 5.0]
    result = engine.run_batch([Snapshot(i, p, "X") for i, p in enumerate(prices)])
    assert np.isfinite(result.scores).all()
    for _, e in result.rejected:
        assert e.code == "non_finite_features"


def test_signal_policy_margin() -> None:
    assert SignalPolicy(0.1).signals(np.array([0.6, 0.59, 0.4, 0.41])) == ["buy", "hold", "sell", "hold"]


def test_clone_is_independent_and_equal_to_deepcopy() -> None:
    import copy

    from spark_ml.core.features import SymbolState

    st = SymbolState()
    for i in range(60):
        st.update(Snapshot(i, 100.0 + (i * 7) % 11, "A"))
    clone, deep = st.clone(), copy.deepcopy(st)
    nxt = [Snapshot(60 + i, 95.0 + i, "A") for i in range(30)]
    assert [clone.update(s) for s in nxt] == [deep.update(s) for s in nxt]
    assert st.n == 60  # the original did not move
    assert st.peek(nxt[0]) == SymbolState.clone(st).update(nxt[0])


@pytest.mark.parametrize("n", [1, 31, 32, 300])
def test_encode_is_the_same_bytes_and_latencies_at_every_batch_size(n: int) -> None:
    # From 32 rows on, encode packs column by column; below, row by row: both must give the same output.
    import msgpack

    from spark_ml.core.codec import encode, prediction_wire

    engine = Engine(BaselineModel())
    snaps = [
        Snapshot(1000 + i, 100.0 + (i * 7) % 13, f"S{i % 5}", recv=(5.0 + i * 1e-4 if i % 4 else 0.0)) for i in range(n)
    ]
    result = engine.run_batch(snaps)
    now = 6.0
    got = result.encode(now)
    lat = [(now - s.recv) * 1000.0 if s.recv else 0.0 for s in result.snaps]
    assert result.latencies_ms == lat
    want = [
        encode(
            prediction_wire(s, sc, sig, abs(sc - 0.5) * 2.0, result.model_version, result.feature_names, row, ms),
            "msgpack",
        )
        for s, sc, sig, row, ms in zip(
            result.snaps, result.scores.tolist(), result.signals, result.x.tolist(), lat, strict=True
        )
    ]
    assert [msgpack.unpackb(g) for g in got] == [msgpack.unpackb(w) for w in want]
    assert len(got) == n

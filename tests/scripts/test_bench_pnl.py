"""The analytics benchmark's figures (spark_ml.scripts.harness.pnl) on phases whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_ml.scripts.harness.pnl import PnlUpdates, measure


def _updates(rows: list[tuple[float, int, int]], lag: float = 1.0) -> PnlUpdates:
    """``rows`` of (arrival time s, symbol index, seq)."""
    t, sym, seq = zip(*rows, strict=True) if rows else ((), (), ())
    return PnlUpdates(
        t=np.asarray(t, dtype=np.float64),
        sym=np.asarray(sym, dtype=np.int64),
        seq=np.asarray(seq, dtype=np.int64),
        lag_ms=np.full(len(rows), lag),
    )


def test_each_snapshot_waits_for_the_first_update_at_or_past_it() -> None:
    # Given 6 snapshots (seq 10..15) over 2 symbols sent 10 ms apart: symbol 0 has seq 10, 12, 14
    send = np.array([0.00, 0.01, 0.02, 0.03, 0.04, 0.05])
    upd = _updates(
        [
            (0.005, 0, 8),  # an older state (heartbeat of the previous phase): reflects none of them
            (0.015, 0, 10),  # reflects seq 10 (sent at 0.00): 15 ms
            (0.016, 1, 11),  # reflects seq 11 (0.01): 6 ms
            (0.070, 0, 14),  # coalesced: reflects seq 12 (0.02) and 14 (0.04): 50 and 30 ms
            (0.071, 1, 13),  # reflects seq 13 (0.03): 41 ms
            (0.080, 1, 12),  # out of order, older than what symbol 1 already showed: changes nothing
            (0.200, 1, 15),  # reflects seq 15 (0.05): 150 ms, over the target
            (0.300, -1, 99),  # another symbol: ignored
        ]
    )
    # When the phase is measured
    out = measure(send, 10, 2, upd)
    # Then each snapshot's latency is the hand-computed one
    want_ms = np.array([15, 6, 50, 41, 30, 150])
    assert out["latency_us"]["max"] == pytest.approx(150_000)
    assert out["latency_us"]["min"] == pytest.approx(6_000)
    assert out["latency_us"]["p50"] == pytest.approx(np.median(want_ms) * 1000)
    assert out["reflected"] == 6 and out["missing"] == 0
    assert out["symbols"] == out["symbols_updated"] == 2
    assert out["within_target"] == pytest.approx(5 / 6)
    # and the gaps while data flowed, up to the first update after each symbol's last send: symbol 0 from
    # 0.00 to 0.015 and 0.015 to 0.070 (its last send: 0.04); symbol 1 from 0.01 to 0.016 and 0.016 to 0.071
    # (its last send: 0.05)
    assert out["max_gap_ms"] == pytest.approx(55.0)
    assert out["updates"] == 7
    # updates that arrived between each symbol's first and last send (the heartbeat counts): symbol 0 has 0.005
    # and 0.015, symbol 1 has 0.016; the phase lasted 50 ms
    assert out["updates_per_s"] == pytest.approx(3 / 0.05)
    assert out["service_lag_ms_max"] == 1.0


def test_a_snapshot_never_reflected_is_a_miss_not_a_dropped_sample() -> None:
    send = np.array([0.0, 0.1, 0.2, 0.3])
    # symbol 0 (seq 0, 2) is reflected up to seq 0 only; symbol 1 (seq 1, 3) never
    out = measure(send, 0, 2, _updates([(0.01, 0, 0), (0.5, 0, 0)]))
    assert out["reflected"] == 1 and out["missing"] == 3
    assert out["symbols"] == 2 and out["symbols_updated"] == 1
    assert out["within_target"] == pytest.approx(0.25)
    assert out["latency_us"]["samples"] == 1
    assert math.isinf(out["max_gap_ms"])


def test_no_update_at_all() -> None:
    out = measure(np.array([0.0, 0.1]), 0, 1, _updates([]))
    assert out["latency_us"] is None and out["within_target"] == 0.0 and out["missing"] == 2
    assert out["service_lag_ms_max"] is None


def test_files_round_trip(tmp_path) -> None:
    upd = _updates([(0.5, 3, 7), (0.25, 1, 2)], lag=np.nan)
    upd.save(str(tmp_path / "p"))
    back = PnlUpdates.load(str(tmp_path / "p"))
    for name in ("t", "sym", "seq"):
        assert np.array_equal(getattr(back, name), getattr(upd, name))
    assert np.isnan(back.lag_ms).all()

"""Live quality: the stream's own labels equal training's, windows score as evaluate.py does, memory is bounded."""

from __future__ import annotations

import math
import random
import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from spark_ml.core.codec import Snapshot
from spark_ml.core.features import WARMUP
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.evaluate import accuracy, auc, brier, log_loss
from spark_ml.core.ml.live_quality import LabelJoin, LiveQuality, Window, live_figures, pool_windows
from spark_ml.core.ml.synthetic import SyntheticConfig, generate


def _beds(k: int = 3, n: int = 1500) -> list[Dataset]:
    return [generate(SyntheticConfig(seed=i, n_bars=n, symbol=f"SYN{i}")) for i in range(k)]


def _interleaved(beds: list[Dataset], seed: int = 0) -> list[tuple[Snapshot, float]]:
    """Every bed's bars in order per symbol, symbols interleaved at random; the score is the true p_up."""
    rng = random.Random(seed)
    pos = [0] * len(beds)
    out = []
    while any(p < len(b.snapshots) for p, b in zip(pos, beds, strict=True)):
        i = rng.choice([j for j, b in enumerate(beds) if pos[j] < len(b.snapshots)])
        out.append((beds[i].snapshots[pos[i]], float(beds[i].extra["p_up"][pos[i]])))
        pos[i] += 1
    return out


def _batches(rows: list[tuple[Snapshot, float]], seed: int = 1) -> list[list[tuple[Snapshot, float]]]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(rows):
        k = rng.randint(1, 300)
        out.append(rows[i : i + k])
        i += k
    return out


def _offline(beds: list[Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """Training's labels and the scores of the rows walk-forward evaluates (Dataset.rows), every bed pooled."""
    y = np.concatenate([b.labels() for b in beds])
    s = np.concatenate([b.extra["p_up"][b.rows()] for b in beds])
    return y, s


def test_brier_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 500), rng.random(500)
    assert brier(y, s) == pytest.approx(brier_score_loss(y, s), abs=1e-12)
    assert brier([1, 0], [1.0, 0.0]) == 0.0
    assert math.isnan(brier([], []))


def test_labels_and_figures_equal_offline_on_the_same_rows() -> None:
    # Given three symbols of the synthetic bed, interleaved and cut into random batches
    beds = _beds()
    join = LabelJoin(max_symbols=100)
    window = Window(10**6)
    # When they are fed in order
    labelled = 0
    for batch in _batches(_interleaved(beds)):
        labelled += join.feed([s for s, _ in batch], [p for _, p in batch], window)
    # Then exactly the rows walk-forward evaluates are labelled, with training's labels
    y, s = _offline(beds)
    assert labelled == window.total == len(window) == y.size == sum(len(b.snapshots) - WARMUP - 1 for b in beds)
    got_y, got_s = window.arrays()
    # Rows come per symbol in order, so compare each symbol's sequence: sort both by (score, label) pairs.
    assert sorted(zip(got_s.tolist(), got_y.tolist(), strict=True)) == sorted(zip(s.tolist(), y.tolist(), strict=True))
    figs = window.figures()
    assert figs["auc"] == pytest.approx(auc(y, s), abs=1e-12)
    assert figs["accuracy"] == pytest.approx(accuracy(y, s), abs=1e-12)
    assert figs["log_loss"] == pytest.approx(log_loss(y, s), abs=1e-12)
    assert figs["brier"] == pytest.approx(brier(y, s), abs=1e-12)
    # The planted signal is there (Bayes AUC near 0.7), so the check above is not one of a coin flip.
    assert figs["auc"] > 0.62


def test_window_keeps_the_last_rows() -> None:
    w = Window(3)
    join = LabelJoin(max_symbols=10, warmup=0)
    mids = [1.0, 2.0, 1.5, 1.6, 1.7, 1.0]
    join.feed([Snapshot(i, m, "A") for i, m in enumerate(mids)], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], w)
    # 5 labelled (the last is pending): up, down, up, up, down; the window keeps the last three
    assert w.total == 5
    assert list(w.labels) == [True, True, False]
    assert list(w.scores) == [0.3, 0.4, 0.5]
    assert join.pending("A")
    with pytest.raises(ValueError):
        Window(0)


def test_equal_mid_is_not_up() -> None:
    w = Window(10)
    LabelJoin(max_symbols=10, warmup=0).feed([Snapshot(0, 5.0, "A"), Snapshot(1, 5.0, "A")], [0.9, 0.9], w)
    assert list(w.labels) == [False]


def test_shadow_gets_the_same_labels_and_skips_rows_it_did_not_score() -> None:
    live, shadow = Window(100), Window(100)
    join = LabelJoin(max_symbols=10, warmup=0)
    snaps = [Snapshot(i, m, "A") for i, m in enumerate([1.0, 2.0, 1.0, 3.0])]
    join.feed(snaps[:2], [0.6, 0.4], live, [0.7, None], shadow)
    join.feed(snaps[2:], [0.6, 0.4], live, [0.2, 0.8], shadow)
    assert list(live.labels) == [True, False, True]
    # The shadow had no score for the second snapshot: its label is not counted for the shadow.
    assert list(shadow.labels) == [True, True]
    assert list(shadow.scores) == [0.7, 0.2]


def test_count_of_spares_a_warm_symbol_a_second_warm_up() -> None:
    # A symbol whose warm state moved here: the join has never seen it, its feature state has 500 snapshots.
    w = Window(100)
    join = LabelJoin(max_symbols=10)
    snaps = [Snapshot(i, 1.0 + i, "A") for i in range(3)] + [Snapshot(0, 1.0, "B")]
    counts = {"A": 500, "B": 1}
    join.feed(snaps, [0.5] * 4, w, count_of=counts.__getitem__)
    # A's 1st and 2nd predictions are labelled (counts 498, 499 after the batch's later rows are taken off)
    assert w.total == 2
    # while a new symbol still warms up
    join.feed([Snapshot(1, 2.0, "B")], [0.5], w, count_of=counts.__getitem__)
    assert w.total == 2


def test_memory_stays_bounded_with_100k_symbols() -> None:
    # Given a join that must remember 1,000 symbols, fed 100,000 distinct ones twice
    join = LabelJoin(max_symbols=1000, warmup=0)
    w = Window(5000)

    def round_(n: int, t: int) -> None:
        for start in range(0, n, 256):
            snaps = [Snapshot(t, 1.0 + t, f"S{k}") for k in range(start, min(n, start + 256))]
            join.feed(snaps, [0.5] * len(snaps), w)

    tracemalloc.start()
    try:
        round_(10_000, 0)
        small = tracemalloc.get_traced_memory()[0]
        round_(100_000, 1)
        round_(100_000, 2)
        big, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then it holds at most two generations (and a batch), and memory does not grow with the number of symbols
    assert len(join) <= 2000 + 256
    assert big < small * 1.5, (small, big)
    assert peak < 5_000_000
    # and nothing was labelled across symbols (each symbol came back only after 99,999 others)
    assert w.total == 0


def test_recent_symbols_keep_their_pending_label() -> None:
    # A symbol seen within the last max_symbols distinct symbols is always remembered (as in an LRU).
    join = LabelJoin(max_symbols=100, warmup=0)
    w = Window(10_000)
    for t in range(5):
        snaps = [Snapshot(t, 1.0 + t, f"S{k}") for k in range(100)]
        join.feed(snaps, [0.5] * 100, w)
    assert w.total == 4 * 100


def _quality(**kw: object) -> LiveQuality:
    lq = LiveQuality(window=1000, max_symbols=100, warmup=0, **kw)  # type: ignore[arg-type]
    lq.set_versions("a", "b")
    return lq


def test_batches_wait_for_their_shadow_scores() -> None:
    lq = _quality()
    snaps = [Snapshot(i, float(i + 1), "A") for i in range(4)]
    k1, k2 = object(), object()
    lq.observe(k1, snaps[:2], [0.6, 0.6], "a")
    lq.observe(k2, snaps[2:], [0.6, 0.6], "a")
    # Nothing joined while the first batch waits for the shadow
    assert lq.windows["a"].total == 0 and lq.waiting_rows == 4
    lq.shadow_scored(k2, "b", [0.1, 0.1])
    assert lq.windows["a"].total == 0
    lq.shadow_scored(k1, "b", None)  # skipped: its rows have no shadow score
    assert lq.windows["a"].total == 3 and lq.waiting_rows == 0
    # the shadow's one labelled row is the third snapshot's (the first two were skipped; the fourth is pending)
    assert lq.windows["b"].total == 1
    rows = {q.role: q for q in lq.report()}
    assert rows["active"].version == "a" and rows["active"].labelled == 3
    assert rows["shadow"].version == "b" and rows["shadow"].rows == 1


def test_backlog_is_bounded_when_the_shadow_falls_behind() -> None:
    lq = _quality(backlog_rows=10)
    for t in range(10):
        lq.observe(object(), [Snapshot(t, 1.0 + t, "A"), Snapshot(t, 1.0 + t, "B")], [0.5, 0.5], "a")
    assert lq.waiting_rows <= 10
    assert lq.windows["a"].total > 0


def test_promotion_keeps_the_window_and_drops_old_versions() -> None:
    lq = _quality()
    lq.set_versions("a", None)
    lq.observe(object(), [Snapshot(0, 1.0, "A"), Snapshot(1, 2.0, "A")], [0.5, 0.5], "a")
    assert lq.windows["a"].total == 1
    lq.set_versions("c", "a")
    assert lq.windows["a"].total == 1
    assert lq.set_versions("a", None) == ["c"]
    assert [q.role for q in lq.report()] == ["active"]


def test_report_of_an_empty_window_is_nan() -> None:
    q = _quality().report()[0]
    assert q.rows == 0 and all(math.isnan(v) for v in q.figures.values())
    assert q.as_dict()["auc"] is None


def test_live_figures_are_evaluate_definitions() -> None:
    y = np.array([0, 1, 1, 0, 1])
    s = np.array([0.2, 0.8, 0.4, 0.6, 0.9])
    assert live_figures(y, s) == {
        "auc": auc(y, s),
        "accuracy": accuracy(y, s),
        "log_loss": log_loss(y, s),
        "brier": brier(y, s),
    }


def test_first_sight_counts_discount_the_batches_still_waiting() -> None:
    # The state's count is read when a batch is joined; batches observed after it have advanced the state.
    counts = {"A": 0}
    lq = LiveQuality(window=100, max_symbols=10, count_of=counts.__getitem__, warmup=3)
    lq.set_versions("a", "b")
    keys = [object() for _ in range(3)]
    for t, key in enumerate(keys):
        counts["A"] += 2  # the engine's state after this batch
        lq.observe(key, [Snapshot(2 * t, 1.0 + 2 * t, "A"), Snapshot(2 * t + 1, 2.0 + 2 * t, "A")], [0.5, 0.5], "a")
    for key in keys:
        lq.shadow_scored(key, "b", None)
    # Six snapshots, warm-up 3: predictions 4 and 5 are labelled (6 is pending), exactly as without count_of.
    assert lq.windows["a"].total == 2


def test_pooled_windows_are_the_concatenated_windows() -> None:
    rng = np.random.default_rng(3)
    y1, s1 = rng.integers(0, 2, 300), rng.random(300)
    y2, s2 = rng.integers(0, 2, 200), np.clip(rng.random(200) + 0.3, 0, 1)
    pooled = pool_windows(
        [("shadow", "b", 7, y1[:50], s1[:50]), ("active", "a", 310, y1, s1), ("active", "a", 200, y2, s2)]
    )
    assert [(q.role, q.version, q.workers, q.labelled, q.rows) for q in pooled] == [
        ("active", "a", 2, 510, 500),
        ("shadow", "b", 1, 7, 50),
    ]
    y, s = np.concatenate([y1, y2]), np.concatenate([s1, s2])
    assert pooled[0].figures == live_figures(y, s)
    # not the mean of the two workers' AUCs
    assert pooled[0].figures["auc"] != pytest.approx((auc(y1, s1) + auc(y2, s2)) / 2, abs=1e-6)


def test_a_redelivered_snapshot_is_not_the_next_bar() -> None:
    w = Window(10)
    join = LabelJoin(max_symbols=10, warmup=0)
    a, b = Snapshot(1, 5.0, "A"), Snapshot(2, 6.0, "A")
    join.feed([a, Snapshot(1, 5.0, "A"), b], [0.7, 0.7, 0.2], w)
    # The copy of ``a`` neither labels ``a`` (as a flat move) nor counts itself: ``a`` is labelled by ``b``.
    assert list(w.labels) == [True] and list(w.scores) == [0.7]

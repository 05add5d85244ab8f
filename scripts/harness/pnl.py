"""What the ``analytics`` scenario measures, computed from the raw times of one paced phase.

Definitions (each one is what issue #5 asks of the live analytics consumer, ``analytics.pnl.<SYMBOL>``):

* **latency of a snapshot**: from the moment the publisher wrote it to the moment the sink read the
  FIRST ``analytics.pnl.<its symbol>`` update that reflects it. An update reflects a snapshot when the
  update's ``ts`` (the ``ts`` of the last price the paper position was marked to) is at or past the
  snapshot's: every snapshot carries ``ts = ts0 + seq``, unique and rising per symbol, and the consumer
  marks prices in order, so an update with ``ts >= ts0 + seq`` includes that snapshot (or a later price of
  the same symbol, which supersedes it). Coalescing (at most one update per symbol every ``min_gap_s``)
  therefore shows up as latency, as it should: a snapshot absorbed into a later update waits for that
  update. Both times are ``time.perf_counter()`` (CLOCK_MONOTONIC) of separate processes, so the figure
  covers publisher -> nats-server -> ``spark-ml up`` -> nats-server -> sink, every hop included.
* **within 100 ms**: the fraction of all snapshots sent whose latency is at most 100 ms; a snapshot never
  reflected by any update counts as a miss (``missing``), never as a sample left out.
* **max gap**: for each symbol, the longest time, while its data flowed (from the send of its first
  snapshot in the phase until the first update arriving after the send of its last one), without any
  update of that symbol arriving (heartbeats count: they are updates); the maximum over symbols.
* **updates per second**: updates of the phase's symbols that arrived while data flowed, per second.
* **symbols updated**: symbols of the phase with at least one update reflecting one of its snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["PNL_SUBJECT", "TARGET_MS", "PnlUpdates", "measure"]

PNL_SUBJECT = "analytics.pnl.>"

TARGET_MS = 100.0
"""Issue #5: each update within 100 ms of the snapshot that caused it."""

_PERCENTILES = (50.0, 99.0, 99.9)


@dataclass(frozen=True)
class PnlUpdates:
    """The updates a sink read, in arrival order.

    Attributes:
        t: arrival time of each update (``perf_counter``, seconds).
        sym: symbol index (``SYM<k>`` -> k; -1 for any other symbol).
        seq: sequence number of the last price it includes (``ts - ts0``; negative when it has none).
        lag_ms: the update's own ``lagMs`` (the consumer's receive-to-publish figure), nan when absent.
    """

    t: NDArray[np.float64]
    sym: NDArray[np.int64]
    seq: NDArray[np.int64]
    lag_ms: NDArray[np.float64]

    def save(self, prefix: str) -> None:
        for name in ("t", "sym", "seq", "lag_ms"):
            getattr(self, name).tofile(f"{prefix}.pnl.{name}")

    @classmethod
    def load(cls, prefix: str) -> PnlUpdates:
        return cls(
            t=np.fromfile(f"{prefix}.pnl.t", dtype=np.float64),
            sym=np.fromfile(f"{prefix}.pnl.sym", dtype=np.int64),
            seq=np.fromfile(f"{prefix}.pnl.seq", dtype=np.int64),
            lag_ms=np.fromfile(f"{prefix}.pnl.lag_ms", dtype=np.float64),
        )


def _gap(start: float, end: float, arrivals: NDArray[np.float64]) -> float:
    """Longest stretch from ``start`` without an arrival, up to the first arrival at or after ``end``."""
    after = arrivals[arrivals > start]
    if not len(after):
        return float("inf")
    stop = int(np.searchsorted(after, end, side="left"))
    if stop == len(after):  # nothing arrived after the last send: the gap runs on, unbounded
        return float("inf")
    points = np.concatenate(([start], after[: stop + 1]))
    return float(np.diff(points).max())


def measure(send: NDArray[np.float64], seq0: int, symbols: int, upd: PnlUpdates) -> dict[str, Any]:
    """The phase's figures (see the module docstring); latencies in microseconds, gaps in milliseconds.

    Args:
        send: send time of snapshot ``seq0 + i`` at index ``i`` (the publisher's ``--times`` file).
        seq0: sequence number of the first snapshot of the phase.
        symbols: snapshot ``seq`` belongs to symbol ``seq % symbols``.
        upd: the updates the sink read.
    """
    n = len(send)
    seqs = np.arange(seq0, seq0 + n, dtype=np.int64)
    lat = np.full(n, np.inf)
    max_gap = 0.0
    flowing = 0
    symbols_sent = symbols_updated = 0
    for k in range(symbols):
        mine = seqs % symbols == k
        if not mine.any():
            continue
        s_k = seqs[mine]
        symbols_sent += 1
        sel = upd.sym == k
        u_t, u_seq = upd.t[sel], upd.seq[sel]
        order = np.argsort(u_t, kind="stable")
        u_t, u_seq = u_t[order], u_seq[order]
        if len(u_t):
            # The first update at or past each snapshot: the running maximum of the updates' seq is
            # non-decreasing, so one binary search per snapshot finds it.
            reach = np.maximum.accumulate(u_seq)
            idx = np.searchsorted(reach, s_k, side="left")
            hit = idx < len(u_t)
            lat_k = np.full(len(s_k), np.inf)
            lat_k[hit] = u_t[idx[hit]] - send[s_k[hit] - seq0]
            lat[mine] = lat_k
            symbols_updated += bool(hit.any())
        start, end = float(send[s_k[0] - seq0]), float(send[s_k[-1] - seq0])
        max_gap = max(max_gap, _gap(start, end, u_t))
        flowing += int(((u_t >= start) & (u_t <= end)).sum())
    window = float(send[-1] - send[0]) if n > 1 else 0.0
    ok = np.isfinite(lat)
    got = lat[ok] * 1e6
    lat_us: dict[str, float] | None = None
    if len(got):
        qs = np.percentile(got, _PERCENTILES)
        lat_us = {"p50": float(qs[0]), "p99": float(qs[1]), "p99.9": float(qs[2]), "max": float(got.max())}
        lat_us["min"] = float(got.min())
        lat_us["samples"] = float(len(got))
    ours = upd.sym >= 0
    lags = upd.lag_ms[ours & np.isfinite(upd.lag_ms)]
    return {
        "sent": n,
        "reflected": int(ok.sum()),
        "missing": int(n - ok.sum()),
        "latency_us": lat_us,
        "within_target": float((got <= TARGET_MS * 1e3).sum() / n) if n else None,
        "target_ms": TARGET_MS,
        "max_gap_ms": max_gap * 1e3 if n else None,
        "symbols": symbols_sent,
        "symbols_updated": symbols_updated,
        "updates": int(ours.sum()),
        "updates_per_s": flowing / window if window > 0 else None,
        "service_lag_ms_max": float(lags.max()) if len(lags) else None,
    }

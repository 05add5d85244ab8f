"""What the feature vector is: its names, its warm-up, its units, and the error for a snapshot out of order.

Units are chosen so that one model works across price levels: returns, volatility and MACD are in
basis points of the mid, bandwidth in basis points of the middle band. During warm-up (the first
:data:`WARMUP` updates of a symbol) indicators report neutral values; training drops those rows.
"""

from __future__ import annotations

from spark_ml.core.codec import Snapshot
from spark_ml.core.errors import InvalidInput

__all__ = ["BP", "FEATURE_NAMES", "N_FEATURES", "WARMUP", "out_of_order"]

FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "vol_20",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_pctb",
    "bb_width",
    "spread_bp",
    "log_vol",
)
N_FEATURES = len(FEATURE_NAMES)
WARMUP = 35
"""Updates before every indicator is warm: MACD needs 26 prices and its signal 9 more."""
BP = 1e4
"""Basis points per unit."""


def out_of_order(snap: Snapshot, last_ts: int) -> InvalidInput:
    return InvalidInput(
        f"ts {snap.ts} is older than the last snapshot of {snap.symbol} ({last_ts})", code="out_of_order"
    )

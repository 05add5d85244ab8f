"""What the feature vector is: its names, its warm-up, its units, and the error for a snapshot out of order.

Units are chosen so that one model works across price levels: returns, volatility and MACD are in
basis points of the mid, bandwidth in basis points of the middle band. During warm-up (the first
:data:`WARMUP` updates of a symbol) indicators report neutral values; training drops those rows.
"""

from __future__ import annotations

import math
from typing import Any

from spark_ml.core.codec import Snapshot
from spark_ml.core.errors import InvalidInput

__all__ = ["BP", "FEATURE_NAMES", "N_FEATURES", "WARMUP", "AllOrNothing", "out_of_order"]

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


class AllOrNothing:
    """``update`` of a Python feature state: a refused snapshot leaves the state as it was.

    Refused means ``_fold`` raised, or a feature is not finite (``FloatingPointError``): an extreme price folded
    into the rolling windows would otherwise poison the symbol's next snapshots. Subclasses give ``_fold`` (the
    computation, which may leave the state half-updated when it raises) and ``_copy`` (an independent copy).
    The C kernel does the same with a copy of its plain data.
    """

    __slots__ = ()

    def _fold(self, snap: Snapshot) -> list[float]:
        raise NotImplementedError

    def _copy(self) -> Any:
        raise NotImplementedError

    def update(self, snap: Snapshot) -> list[float]:
        """Fold the next snapshot into the state and return its feature vector (in FEATURE_NAMES order)."""
        saved = self._copy()
        try:
            row = self._fold(snap)
        except BaseException:
            self._restore(saved)
            raise
        if not all(map(math.isfinite, row)):
            self._restore(saved)
            raise FloatingPointError("features are not finite")
        return row

    def _restore(self, saved: Any) -> None:
        names: tuple[str, ...] = type(self).__slots__
        for name in names:
            setattr(self, name, getattr(saved, name))

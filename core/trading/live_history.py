"""Bounded histories of a live paper account: its equity curve and its trade list.

Both are kept for the whole life of the account in bounded memory, so that exports and reports can draw them
from the live state (and the state can be saved as one value):

* :class:`EquityCurve` keeps at most ``max_points`` ``(ts, equity)`` points (``(ts, equity, price)`` when it is
  given prices: the symbol's, for buy-and-hold beside the strategy) spread over the whole history: it
  records every ``stride``-th mark, and when full it drops every other point and doubles the stride. So the
  curve always starts at the first mark and keeps between ``max_points / 2`` and ``max_points`` evenly spaced
  (in marks) points; the newest mark is added by :meth:`EquityCurve.points` when the stride skipped it.
* The trade list is the ``maxlen`` most recent closed trades (:class:`ClosedTrade`), oldest first; the totals
  (trades, win rate, profit factor) are counted over every trade, not only the kept ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ClosedTrade", "EquityCurve"]


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """One round trip of a paper position.

    Attributes:
        side: +1 long, -1 short.
        entry_ts: timestamp (epoch ms) of the price the trade was entered at (None when unknown).
        entry_price: that price.
        exit_ts: timestamp of the price it was closed at (None while open).
        exit_price: that price (nan while open).
        pnl: equity gained, costs included, in units of the starting equity (marked to market while open).
        ret: ``pnl`` over the equity the trade began with.
    """

    side: int
    entry_ts: int | None
    entry_price: float
    exit_ts: int | None
    exit_price: float
    pnl: float
    ret: float

    def wire(self) -> dict[str, Any]:
        """camelCase plain data (``exitTs``/``exitPrice`` None while open)."""
        return {
            "side": self.side,
            "entryTs": self.entry_ts,
            "entryPrice": self.entry_price,
            "exitTs": self.exit_ts,
            "exitPrice": self.exit_price if self.exit_ts is not None else None,
            "pnl": self.pnl,
            "return": self.ret if math.isfinite(self.ret) else None,
        }

    def state(self) -> list[Any]:
        # Not dataclasses.astuple: it deep-copies field by field, and checkpoints write every trade each second.
        return [self.side, self.entry_ts, self.entry_price, self.exit_ts, self.exit_price, self.pnl, self.ret]

    @classmethod
    def from_state(cls, row: list[Any]) -> ClosedTrade:
        side, entry_ts, entry_price, exit_ts, exit_price, pnl, ret = row
        return cls(int(side), entry_ts, float(entry_price), exit_ts, float(exit_price), float(pnl), float(ret))


class EquityCurve:
    """A decimating equity curve (see the module docstring).

    Args:
        max_points: points kept at most (even, >= 2).
    """

    __slots__ = ("_eq", "_last", "_n", "_px", "_stride", "_ts", "max_points")

    def __init__(self, max_points: int = 1000) -> None:
        if max_points < 2 or max_points % 2:
            raise ValueError("max_points must be an even number >= 2")
        self.max_points = max_points
        self._ts: list[int | None] = []
        self._eq: list[float] = []
        self._px: list[float] = []
        self._stride = 1
        self._n = 0
        self._last: tuple[Any, ...] | None = None

    def add(self, ts: int | None, equity: float, price: float | None = None) -> None:
        """Offer one mark (give a price with every mark or with none); O(1) amortized."""
        self._last = (ts, equity) if price is None else (ts, equity, price)
        if self._n % self._stride == 0:
            if price is not None and len(self._px) == len(self._ts):  # a curve saved without prices stays so
                self._px.append(price)
            self._ts.append(ts)
            self._eq.append(equity)
            if len(self._eq) > self.max_points:
                del self._ts[1::2], self._eq[1::2], self._px[1::2]
                self._stride *= 2
        self._n += 1

    def __len__(self) -> int:
        return len(self._eq)

    @property
    def stride(self) -> int:
        """Marks per kept point."""
        return self._stride

    def points(self) -> list[tuple[Any, ...]]:
        """``(ts, equity)`` or ``(ts, equity, price)`` oldest first, the newest mark included (at most
        ``max_points + 1`` points)."""
        cols = (self._ts, self._eq, self._px) if self._px and len(self._px) == len(self._ts) else (self._ts, self._eq)
        out: list[tuple[Any, ...]] = list(zip(*cols, strict=True))
        if self._last is not None and (self._n - 1) % self._stride:
            out.append(self._last)
        return out

    def state(self) -> dict[str, Any]:
        return {
            "max": self.max_points,
            "ts": self._ts,
            "eq": self._eq,
            "px": self._px,
            "stride": self._stride,
            "n": self._n,
            "last": list(self._last) if self._last is not None else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EquityCurve:
        curve = cls(int(state["max"]))
        curve._ts = list(state["ts"])
        curve._eq = [float(x) for x in state["eq"]]
        curve._px = [float(x) for x in state.get("px", ())]
        curve._stride = int(state["stride"])
        curve._n = int(state["n"])
        last = state.get("last")
        curve._last = (last[0], *(float(x) for x in last[1:])) if last is not None else None
        return curve

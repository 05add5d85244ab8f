"""Analytics from the test's side: snapshot and prediction messages for it, and a fed set of symbols."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import numpy as np
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.trading.live_pnl import PaperPosition

__all__ = ["H", "T0", "feed", "prediction", "snap"]

T0 = 1_696_723_200_000
"""The first bar's time (the seeds' example ``ts``)."""
H = 3_600_000
"""One hour in milliseconds: the bars' spacing."""


def snap(symbol: str, mid: float, ts: int, **fields: Any) -> bytes:
    """A snapshot of ``symbol`` at ``ts`` (msgpack), with extra wire ``fields``."""
    return msgpack.packb({"ts": ts, "mid": mid, "symbol": symbol, **fields})


def prediction(symbol: str, signal: str, ts: int = T0) -> bytes:
    """A prediction of ``symbol`` at ``ts`` with ``signal`` (msgpack), as a worker publishes it."""
    body = {"ts": ts, "symbol": symbol, "score": 0.5, "signal": signal, "confidence": 0.0}
    return msgpack.packb({**body, "modelVersion": "test", "features": {}, "latencyMs": 0.0})


async def feed(
    nc: Client,
    symbols: list[str],
    n: int,
    seed: int = 0,
    start: int = 0,
    refs: dict[str, PaperPosition] | None = None,
    pace_s: float = 0.0,
) -> dict[str, PaperPosition]:
    """Publish hourly bars ``start .. start + n - 1`` per symbol, each followed by a random signal; return
    reference positions fed the same (``refs`` continued when given). ``pace_s``: a pause after each bar."""
    rng = np.random.default_rng(seed)
    refs = refs if refs is not None else {s: PaperPosition() for s in symbols}
    for k in range(start, start + n):
        for s in symbols:
            price = float(100 * np.exp(rng.normal(0, 0.01)) * (1 + k * 1e-4))
            signal = str(rng.choice(["buy", "sell", "hold"]))
            await nc.publish(subjects.snapshot_for(s), snap(s, price, T0 + k * H))
            await nc.publish(subjects.PREDICTION, prediction(s, signal, T0 + k * H))
            refs[s].update(price, T0 + k * H)
            refs[s].on_signal(signal)
        if pace_s:
            await asyncio.sleep(pace_s)
    await nc.flush()
    return refs

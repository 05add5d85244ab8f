"""``spark-ml replay``: publish snapshots from real market data or the synthetic bed, at a chosen rate."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from tqdm import tqdm

from spark_ml.core import subjects
from spark_ml.core.codec import Encoding, Snapshot, encode
from spark_ml.core.errors import InvalidInput, MissingExtra
from spark_ml.core.ml.sources import load
from spark_ml.worker.connect import connect
from spark_ml.worker.pipeline.publish import content_headers
from spark_ml.worker.settings import Settings

__all__ = ["replay", "snapshot_payload"]

_TICK_S = 0.01


def snapshot_payload(snap: Snapshot, *, ts: int, symbol: str) -> dict[str, Any]:
    """The wire form of a data-set bar (fields the bar does not have are left out)."""
    out: dict[str, Any] = {"ts": ts, "mid": snap.mid, "symbol": symbol}
    if snap.spread_bp is not None:
        out["spreadBp"] = snap.spread_bp
    if snap.vol1m is not None:
        out["vol1m"] = snap.vol1m
    return out


async def replay(settings: Settings, args: argparse.Namespace) -> int:
    try:
        data = await asyncio.to_thread(load, args.data)
    except InvalidInput as exc:
        print(f"spark-ml replay: {exc.message}", file=sys.stderr)
        return 2
    except MissingExtra as exc:
        print(f"spark-ml replay: {exc.message}", file=sys.stderr)
        return 1
    bars = data.snapshots
    symbol = args.symbol or data.symbol
    total = args.count or len(bars)
    encoding: Encoding = "json" if args.json else "msgpack"
    headers = content_headers(encoding)
    subject = subjects.snapshot_for(symbol) if args.per_symbol_subject else subjects.SNAPSHOT
    # Looping past the end shifts timestamps forward so a symbol's ts keeps increasing.
    span = bars[-1].ts - bars[0].ts + 1
    nc = await connect(settings, name="spark-ml-replay")
    rate = max(args.rate, 0.0)
    start = time.perf_counter()
    sent = 0
    try:
        with tqdm(total=total, unit="msg", file=sys.stderr, desc=f"replay {data.name} as {symbol}") as bar:
            while sent < total:
                if rate:
                    due = min(total, int((time.perf_counter() - start) * rate) + 1)
                    if due <= sent:
                        await asyncio.sleep(_TICK_S)
                        continue
                else:
                    due = min(total, sent + 1000)
                for i in range(sent, due):
                    snap = bars[i % len(bars)]
                    ts = snap.ts + (i // len(bars)) * span
                    payload = encode(snapshot_payload(snap, ts=ts, symbol=symbol), encoding)
                    await nc.publish(subject, payload, headers=headers)
                bar.update(due - sent)
                sent = due
                if not rate:
                    await nc.flush()
        await nc.flush()
    finally:
        await nc.close()
    elapsed = time.perf_counter() - start
    print(f"published {sent} snapshots of {symbol} on {subject} in {elapsed:.2f}s", file=sys.stderr)
    return 0

"""Live analytics over a real nats-server: paper positions, PnL messages, their timing, and bad input."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgpack
import numpy as np
import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.trading.live_pnl import PaperPosition
from spark_ml.worker.services.analytics import AnalyticsService
from tests.support import analytics
from tests.support.analytics import T0, prediction
from tests.support.messages import Collector, decode_any


def snap(symbol: str, mid: float, ts: int) -> bytes:
    return analytics.snap(symbol, mid, ts, spreadBp=1.0)


async def _next(c: Collector, n: int) -> dict[str, Any]:
    await c.wait(n)
    body: dict[str, Any] = decode_any(c.msgs[n - 1].data)
    return body


async def test_paper_position_follows_signals_and_prices(nc: Client, analytics_service, collect, uid: str) -> None:
    # Given the analytics service (no throttling) and a listener on the symbol's PnL subject
    await analytics_service(min_gap_s=0.0, interval_s=60)
    sym = f"S{uid}"
    out = await collect(subjects.analytics_pnl(sym))
    ref = PaperPosition()
    # When a price, a buy, a higher price, a sell and a lower price arrive, one after the other
    steps: list[tuple[str, Any]] = [("snap", 100.0), ("sig", "buy"), ("snap", 110.0), ("sig", "sell"), ("snap", 99.0)]
    for i, (kind, value) in enumerate(steps, start=1):
        if kind == "snap":
            await nc.publish(subjects.snapshot_for(sym), snap(sym, value, T0 + i))
            ref.update(value, T0 + i)
        else:
            await nc.publish(subjects.PREDICTION, prediction(sym, value))
            ref.on_signal(value)
        body = await _next(out, i)
        # Then every event yields a message equal to a paper position fed the same events
        expected = ref.snapshot().wire()
        assert {k: body[k] for k in expected} == pytest.approx(expected)
    assert body["symbol"] == sym and body["position"] == 0 and body["trades"] == 1
    assert body["realizedPnl"] == pytest.approx(0.1) and body["equity"] == pytest.approx(1.1)
    assert body["winRate"] == 1.0 and body["profitFactor"] is None  # unbounded: no losing trade
    assert body["lagMs"] >= 0 and body["publishedAt"] > T0


async def test_bare_subject_and_json_snapshots(nc: Client, analytics_service, collect, uid: str) -> None:
    await analytics_service(min_gap_s=0.0, interval_s=60)
    sym = f"J{uid}"
    out = await collect(subjects.analytics_pnl(sym))
    await nc.publish(subjects.SNAPSHOT, json.dumps({"ts": T0, "mid": 2.0, "symbol": sym}).encode())
    assert (await _next(out, 1))["price"] == 2.0


async def test_bad_input_is_skipped_and_the_service_keeps_going(
    nc: Client, analytics_service, collect, uid: str
) -> None:
    svc = await analytics_service(min_gap_s=0.0, interval_s=60)
    sym = f"B{uid}"
    out = await collect(subjects.analytics_pnl(sym))
    for raw in (b"\xc1garbage", msgpack.packb({"ts": 1}), msgpack.packb([1, 2])):
        await nc.publish(subjects.snapshot_for(sym), raw)
    for raw in (b"", msgpack.packb({"symbol": sym}), prediction(sym, "short"), prediction("bad sym", "buy")):
        await nc.publish(subjects.PREDICTION, raw)
    await nc.publish(subjects.snapshot_for(sym), snap(sym, 5.0, T0 + 10))
    await nc.publish(subjects.snapshot_for(sym), snap(sym, 6.0, T0 + 5))  # out of order
    await nc.publish(subjects.snapshot_for(sym), snap(sym, 7.0, T0 + 20))
    body = await _next(out, 2)
    assert body["price"] == 7.0 and body["updates"] == 2
    assert svc.skipped == 8 and svc.snapshots == 2 and svc.predictions == 0


async def test_symbols_with_dots_and_wildcards_get_one_literal_escaped_subject(
    nc: Client, analytics_service, collect, uid: str
) -> None:
    # Given the service and a listener on every analytics subject
    await analytics_service(min_gap_s=0.0, interval_s=60)
    out = await collect(f"{subjects.ANALYTICS_PNL_PREFIX}.>")
    hostile = [f"BRK.B{uid}", f"*{uid}", f">{uid}", f"a.*.>{uid}", f"{uid}.", f"%2E{uid}"]
    # When each of them gets a snapshot (the symbol in the payload, on the bare subject)
    for i, sym in enumerate(hostile):
        await nc.publish(subjects.SNAPSHOT, snap(sym, 1.0 + i, T0))
    # Then each is published once, on a three-token subject whose last token is the escaped symbol
    await out.wait(len(hostile))
    await asyncio.sleep(0.1)
    got = {m.subject: decode_any(m.data)["symbol"] for m in out.msgs}
    assert len(out.msgs) == len(hostile)
    assert got == {subjects.analytics_pnl(sym): sym for sym in hostile}
    assert all(s.count(".") == 2 and not {"*", ">"} & set(s) for s in got)
    assert subjects.analytics_pnl(f"BRK.B{uid}") == f"analytics.pnl.BRK%2EB{uid}"


async def test_a_failing_handler_is_counted_and_the_connection_survives(
    nc: Client, analytics_service, collect, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a service whose handlers run in the client's read loop, and a paper position that fails on one price
    svc = await analytics_service(min_gap_s=0.0, interval_s=60)
    sym = f"F{uid}"
    out = await collect(subjects.analytics_pnl(sym))
    real_update = PaperPosition.update

    def update(self: PaperPosition, price: float, ts: int | None = None) -> None:
        if price == 13.0:
            raise RuntimeError("boom")
        real_update(self, price, ts)

    monkeypatch.setattr(PaperPosition, "update", update)
    reconnects = nc.stats["reconnects"]
    # When that price arrives, then a good one
    await nc.publish(subjects.snapshot_for(sym), snap(sym, 13.0, T0 + 1))
    await nc.publish(subjects.snapshot_for(sym), snap(sym, 14.0, T0 + 2))
    # Then the failure is counted, the next snapshot is handled, and neither connection was reset
    assert (await _next(out, 1))["price"] == 14.0
    assert svc.failures == 1 and svc.skipped == 1 and svc.snapshots == 1
    assert nc.stats["reconnects"] == reconnects and nc.is_connected


async def test_heartbeat_while_active_then_silence(nc: Client, analytics_service, collect, uid: str) -> None:
    # Given a 0.1 s heartbeat and symbols considered idle after 0.5 s
    await analytics_service(interval_s=0.1, idle_s=0.5)
    sym = f"H{uid}"
    out = await collect(subjects.analytics_pnl(sym))
    # When one snapshot arrives and nothing else
    await nc.publish(subjects.snapshot_for(sym), snap(sym, 1.0, T0))
    await asyncio.sleep(1.2)
    n = len(out.msgs)
    # Then heartbeats keep coming while the symbol is active, and stop once it is idle
    assert 3 <= n <= 8
    await asyncio.sleep(0.4)
    assert len(out.msgs) == n


async def test_no_gap_longer_than_the_interval_while_data_flows_slowly(
    nc: Client, analytics_service, collect, uid: str
) -> None:
    # Given a 0.3 s heartbeat and two symbols whose snapshots come every 0.7 s, one offset from the other
    interval = 0.3
    await analytics_service(interval_s=interval, idle_s=5.0)
    syms = [f"G{uid}", f"K{uid}"]
    arrivals: dict[str, list[float]] = {s: [] for s in syms}

    async def on_pnl(msg: Any) -> None:
        arrivals[msgpack.unpackb(msg.data)["symbol"]].append(time.perf_counter())

    await nc.subscribe(f"{subjects.ANALYTICS_PNL_PREFIX}.*", cb=on_pnl)
    await nc.flush()
    # When four snapshots of each arrive over 2.1 s
    first: dict[str, float] = {}
    for i in range(4):
        for j, sym in enumerate(syms):
            await nc.publish(subjects.snapshot_for(sym), snap(sym, 1.0 + i, T0 + i))
            await nc.flush()
            first.setdefault(sym, time.perf_counter())
            await asyncio.sleep(0.2 * (j == 0))
        await asyncio.sleep(0.5)
    last = time.perf_counter()
    await asyncio.sleep(0.1)
    # Then from each symbol's first snapshot to the end, no stretch of interval_s went without an update of it
    for sym in syms:
        points = [first[sym]] + [t for t in arrivals[sym] if first[sym] < t <= last] + [last]
        gaps = [b - a for a, b in zip(points, points[1:], strict=False)]
        assert len(points) > 8 and max(gaps) <= interval, (sym, max(gaps))


async def test_every_snapshot_is_reflected_within_100_ms(nc: Client, analytics_service, collect, uid: str) -> None:
    # Given the default throttle (at most one message per symbol every 50 ms) and two busy symbols
    await analytics_service()
    syms = [f"A{uid}", f"B{uid}"]
    seen: dict[str, list[tuple[float, int]]] = {s: [] for s in syms}
    lags: list[float] = []

    async def on_pnl(msg: Any) -> None:
        body = msgpack.unpackb(msg.data)
        seen[body["symbol"]].append((time.perf_counter(), body["ts"]))
        lags.append(body["lagMs"])

    await nc.subscribe(f"{subjects.ANALYTICS_PNL_PREFIX}.*", cb=on_pnl)
    await nc.flush()
    # When each symbol gets a snapshot every 4 ms for 1.2 s (500 snapshots a second in all)
    sent: list[tuple[str, int, float]] = []
    n = 300
    for i in range(n):
        for sym in syms:
            ts = T0 + i
            await nc.publish(subjects.snapshot_for(sym), snap(sym, 1.0 + i * 1e-4, ts))
            sent.append((sym, ts, time.perf_counter()))
        await nc.flush()
        await asyncio.sleep(0.004)
    await asyncio.sleep(0.3)
    # Then each snapshot shows up in a PnL message (one with its ts or a later one) within 100 ms
    delays = []
    for sym, ts, at in sent:
        arrived = next(t for t, body_ts in seen[sym] if body_ts >= ts)
        delays.append((arrived - at) * 1000.0)
    d = np.array(delays)
    print(
        f"snapshot -> PnL message: p50 {np.median(d):.1f} ms, p99 {np.percentile(d, 99):.1f} ms, max {d.max():.1f} ms"
    )
    assert np.percentile(d, 99) < 100.0
    # and the throttle bounds the traffic: about 20 messages per symbol per second, not 250
    for sym in syms:
        span = seen[sym][-1][0] - seen[sym][0][0]
        assert len(seen[sym]) <= 25 * max(span, 1.0) + 5
    assert max(lags) < 100.0


async def test_with_the_real_worker(nc: Client, worker_factory, analytics_service, collect, uid: str) -> None:
    # Given the worker (baseline model) and analytics on one server
    await worker_factory()
    svc = await analytics_service(min_gap_s=0.0, interval_s=60)
    sym = f"W{uid}"
    preds = await collect(subjects.PREDICTION)
    # When a symbol's snapshots trend up for a while
    for i in range(60):
        await nc.publish(subjects.snapshot_for(sym), snap(sym, 100.0 * (1.001**i) + (i % 3) * 0.05, T0 + i))
    await preds.wait(60)
    await asyncio.sleep(0.2)
    # Then analytics saw every snapshot and every prediction, and its position is the last non-hold signal's
    pp = svc.position(sym)
    assert pp is not None and pp.updates == 60 and svc.predictions >= 60
    signals = [b["signal"] for b in preds.bodies() if b["symbol"] == sym]
    acted = [s for s in signals if s != "hold"]
    assert pp.position == (1 if acted and acted[-1] == "buy" else 0)


async def test_context_manager_and_idempotent_stop(nc: Client) -> None:
    async with AnalyticsService(nc) as svc:
        await svc.start()
    await svc.stop()
    with pytest.raises(ValueError):
        AnalyticsService(nc, interval_s=0)
    with pytest.raises(ValueError):
        AnalyticsService(nc, cost_bp=-1)

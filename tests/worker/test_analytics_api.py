"""The analytics query API over a real nats-server: ``analytics.get`` and ``analytics.export``, replies and refusals."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
import numpy as np
import pytest
from nats.aio.client import Client
from nats.micro.request import ERROR_CODE_HEADER

from spark_ml.core import subjects
from spark_ml.core.trading import analytics as an
from spark_ml.core.trading.live_figures import symbol_figures
from tests.support.analytics import T0 as T0  # the four ``X as X``: test_analytics_failover.py imports them here
from tests.support.analytics import H as H
from tests.support.analytics import feed as feed
from tests.support.analytics import snap as snap
from tests.support.lifecycle import until


async def ask(nc: Client, body: Any, subject: str = subjects.ANALYTICS_GET) -> tuple[int, Any]:
    """(status, decoded body) of one request; the body as JSON unless bytes are given."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await nc.request(subject, raw, timeout=5)
    code = int((reply.headers or {}).get(ERROR_CODE_HEADER, 200))
    data = json.loads(reply.data) if reply.data[:1] == b"{" else msgpack.unpackb(reply.data, raw=False)
    return code, data


async def test_get_answers_a_symbols_figures_as_its_paper_position(nc: Client, analytics_service, uid: str) -> None:
    # Given the service fed 120 bars and signals of two symbols
    svc = await analytics_service()
    a, b = f"A{uid}", f"B{uid}"
    refs = await feed(nc, [a, b], 120)
    await until(lambda: svc.snapshots == 240 and svc.predictions == 240, 10, "every message handled")
    # When EURUSD-style requests ask for one symbol, in JSON and in msgpack
    code, body = await ask(nc, {"symbol": a})
    code_mp, body_mp = await ask(nc, msgpack.packb({"symbol": a}))
    # Then both answer the figures of a paper position fed the same events, by the analytics functions
    assert code == code_mp == 200
    expected = symbol_figures(a, refs[a])
    assert {k: body[k] for k in expected} == pytest.approx(expected)
    assert body_mp["equity"] == body["equity"] and body["servedAt"] >= T0
    assert body["asOf"] == T0 + 119 * H and body["trades"] > 5 and body["window"] == 119
    rets = refs[a].returns()
    assert body["sharpe"] == pytest.approx(an.sharpe(rets, an.MS_PER_YEAR / H))
    assert body["sortino"] == pytest.approx(an.sortino(rets, an.MS_PER_YEAR / H))
    for key in ("position", "realizedPnl", "unrealizedPnl", "equity", "maxDrawdown", "var95", "var95Parametric",
                "var99Parametric", "winRate", "profitFactor", "trades", "exposure"):  # fmt: skip
        assert key in body


async def test_get_without_a_symbol_answers_the_portfolio(nc: Client, analytics_service, uid: str) -> None:
    svc = await analytics_service()
    syms = [f"P{i}{uid}" for i in range(3)]
    refs = await feed(nc, syms, 60, seed=3)
    await until(lambda: svc.snapshots == 180 and svc.predictions == 180, 10, "every message handled")
    requests: list[Any] = [{}, b""]
    for request in requests:  # `nats req analytics.get ''` asks for the portfolio too
        code, body = await ask(nc, request)
        assert code == 200 and body["symbol"] is None and body["symbols"] == 3 and body["weights"] == "equal"
        assert body["equity"] == pytest.approx(np.mean([r.equity for r in refs.values()]))
        assert body["trades"] == sum(r.n_trades for r in refs.values())
        assert body["realizedPnl"] == pytest.approx(np.mean([r.realized for r in refs.values()]))
        assert body["window"] == 58 and body["asOf"] == T0 + 59 * H


async def test_export_gives_the_curve_and_trades_bounded(nc: Client, analytics_service, uid: str) -> None:
    # Given a service keeping 16 curve points and 4 trades per symbol
    svc = await analytics_service(curve_points=16, trades_kept=4)
    a = f"E{uid}"
    refs = await feed(nc, [a], 200, seed=5)
    await until(lambda: svc.snapshots == 200 and svc.predictions == 200, 10, "every message handled")
    # When the symbol and the portfolio are exported
    code, body = await ask(nc, {"symbol": a}, subjects.ANALYTICS_EXPORT)
    pcode, book = await ask(nc, {}, subjects.ANALYTICS_EXPORT)
    # Then the curve spans the whole history in at most 17 points, and the trades are the 4 most recent (+ open)
    assert code == pcode == 200
    curve = body["equityCurve"]
    last = [T0 + 199 * H, pytest.approx(refs[a].equity), pytest.approx(refs[a].price)]
    assert 8 <= len(curve) <= 17 and curve[0][0] == T0 and curve[-1] == last
    assert body["curveStride"] == 16 and body["tradesTotal"] == refs[a].n_trades > 10
    trades = body["trades"]
    every = refs[a].trade_list()
    assert 4 <= len(trades) <= 5 and [t["pnl"] for t in trades] == pytest.approx([t.pnl for t in every[-len(trades) :]])
    assert set(trades[0]) == {"side", "entryTs", "entryPrice", "exitTs", "exitPrice", "pnl", "return"}
    assert body["figures"]["equity"] == pytest.approx(refs[a].equity)
    assert book["symbols"] == [a] and book["figures"]["symbols"] == 1 and len(book["equityCurve"]) >= 8


@pytest.mark.parametrize(
    ("request_body", "status", "code"),
    [
        (b"{not json", 400, "decode"),
        (b"\xc1", 400, "decode"),
        (msgpack.packb([1, 2]), 400, "schema"),
        (json.dumps({"symbol": "X", "window": 5}).encode(), 400, "schema"),
        (json.dumps({"symbol": 5}).encode(), 400, "schema"),
        (json.dumps({"symbol": "has space"}).encode(), 400, "schema"),
        (json.dumps({"symbol": "NOPE"}).encode(), 404, "unknown_symbol"),
        (b"{" + b" " * 5000 + b"}", 413, "payload_too_large"),
    ],
)
@pytest.mark.parametrize("subject", [subjects.ANALYTICS_GET, subjects.ANALYTICS_EXPORT])
async def test_bad_requests_get_clear_errors_and_the_service_keeps_answering(
    nc: Client, analytics_service, uid: str, request_body: bytes, status: int, code: str, subject: str
) -> None:
    await analytics_service()
    got_status, body = await ask(nc, request_body, subject)
    assert got_status == status and body["error"]["code"] == code and body["error"]["message"]
    assert (await ask(nc, {}, subject))[0] == 200


async def test_stats_count_the_refusals(nc: Client, analytics_service, uid: str) -> None:
    await analytics_service()
    await ask(nc, {"symbol": "NOPE"})
    await ask(nc, {})
    reply = await nc.request(f"$SRV.STATS.{subjects.ANALYTICS_SERVICE}", b"", timeout=5)
    stats = {e["name"]: e for e in json.loads(reply.data)["endpoints"]}
    assert stats["get"]["num_requests"] == 2 and stats["get"]["num_errors"] == 1
    assert stats["get"]["last_error"].startswith("404:unknown_symbol")


async def test_queries_take_at_most_their_share_of_the_loop(nc: Client) -> None:
    # Given an API whose answers take 10 ms of the loop each, limited to half of the loop's time
    import time as _time

    from spark_ml.worker.services.analytics_api import AnalyticsApi

    def slow(symbol: str | None) -> dict[str, Any]:
        _time.sleep(0.01)
        return {"symbol": symbol}

    api = AnalyticsApi(nc, get=slow, export=slow, share=0.5)
    await api.start()
    try:
        # When 6 requests arrive at once
        t0 = _time.perf_counter()
        replies = await asyncio.gather(*(nc.request(subjects.ANALYTICS_GET, b"{}", timeout=5) for _ in range(6)))
        elapsed = _time.perf_counter() - t0
    finally:
        await api.stop()
    # Then every one is answered, and each after the first waited as long as the one before it took
    assert all(json.loads(r.data) == {"symbol": None} for r in replies)
    assert elapsed >= 6 * 0.01 + 5 * 0.01 * 0.95
    with pytest.raises(ValueError):
        AnalyticsApi(nc, get=slow, export=slow, share=0)

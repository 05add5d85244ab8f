"""``GET /ml/analytics`` and ``GET /ml/analytics/{symbol}`` against a real nats-server and analytics service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client

from spark_ml.core.subjects import ANALYTICS_GET
from spark_ml.gateway.http import HttpGateway
from spark_ml.worker.services.analytics import AnalyticsService
from tests.gateway.test_http import API_KEY, settings_for
from tests.support.analytics import feed
from tests.support.connections import connected
from tests.support.lifecycle import started, until


@pytest.fixture
async def gw_nc(nats_url: str) -> AsyncIterator[Client]:
    async with connected(nats_url, allow_reconnect=False) as client:
        yield client


@pytest.fixture
async def setup(nc: Client, gw_nc: Client, nats_url: str) -> AsyncIterator[Any]:
    async with started() as group, aiohttp.ClientSession() as http:

        async def make(*, analytics: bool = True, **overrides: Any) -> tuple[AnalyticsService | None, str]:
            svc = await group.start(AnalyticsService(nc)) if analytics else None
            gw = await group.start(HttpGateway(gw_nc, settings_for(nats_url, **overrides)))
            return svc, f"http://127.0.0.1:{gw.port}/ml/analytics"

        yield make, http


async def fetch(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_symbol_and_portfolio_answer_what_nats_answers(setup, nc: Client, uid: str) -> None:
    # Given the analytics service fed two symbols (one with a dot) and a gateway with an API key
    make, http = setup
    svc, base = await make(api_key=API_KEY)
    syms = [f"BRK.B{uid}", f"EURUSD{uid}"]
    await feed(nc, syms, 50)
    await until(lambda: svc is not None and svc.predictions == 100, 10, "every message handled")
    auth = {"X-API-Key": API_KEY}
    for sym, path in ((syms[0], f"/BRK.B{uid}"), (syms[1], f"/EURUSD{uid}"), (None, "")):
        # When it is asked over HTTP and over NATS
        status, body = await fetch(http, base + path, **auth)
        reply = await nc.request(ANALYTICS_GET, json.dumps({"symbol": sym} if sym else {}).encode(), timeout=5)
        direct = json.loads(reply.data)
        # Then both answer the same figures
        assert status == 200
        body.pop("servedAt"), direct.pop("servedAt")
        assert body == direct and body["symbol"] == sym
    # And an unknown symbol is a 404, a bad one a 400, a missing key a 401
    assert (await fetch(http, base + "/NOPE", **auth))[0] == 404
    status, body = await fetch(http, base + "/" + "X" * 65, **auth)
    assert status == 400 and body["error"]["code"] == "schema"
    status, body = await fetch(http, base + f"/EURUSD{uid}")
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_rate_limited_like_predict(setup, nc: Client) -> None:
    make, http = setup
    _, base = await make(rate_limit="2/minute")
    statuses = [(await fetch(http, base))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_no_active_analytics_instance_is_a_503(setup) -> None:
    make, http = setup
    _, base = await make(analytics=False)
    status, body = await fetch(http, base)
    assert status == 503 and body["error"]["code"] == "no_worker"

"""The HTTP gateway as deployed: ``spark-ml gateway`` and ``spark-ml worker`` processes against a nats-server
that requires user/password, the API key set, DEBUG logging. tests/gateway/test_http.py covers the key
in-process (both headers, the open health route); this adds the processes, NATS authentication underneath,
keys that differ only in their last character or length, and the logs of both processes."""

from __future__ import annotations

import asyncio
import secrets
import time

import aiohttp
import pytest

from spark_ml.core.contracts import Prediction
from tests.support.auth_servers import Method
from tests.support.messages import SEED
from tests.support.ports import free_port
from tests.support.processes import SparkMl, predict_end_to_end, service_env

API_KEY = "gw-" + secrets.token_hex(16)
BODY = {"snapshot": {**SEED, "symbol": "GW"}}


async def wait_health(http: aiohttp.ClientSession, url: str, status: int, proc: SparkMl, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not proc.alive():
            pytest.fail(f"gateway exited: {proc.output()[-1500:]}")
        try:
            async with http.get(f"{url}/ml/health") as resp:
                last = resp.status
                if last == status:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail(f"/ml/health answered {last}, not {status}, within {timeout}s: {proc.output()[-1500:]}")


def gateway_env(tmp_path, method_env: dict[str, str]) -> tuple[dict[str, str], str]:
    port = free_port()
    env = service_env(tmp_path / "gw", method_env)
    env.update(SPARK_ML_HTTP_PORT=str(port), SPARK_ML_API_KEY=API_KEY, SPARK_ML_RATE_LIMIT="1000/second")
    return env, f"http://127.0.0.1:{port}"


async def test_gateway_requires_the_key_over_authenticated_nats(methods: dict[str, Method], spawn, tmp_path) -> None:
    # Given a worker and a gateway, both authenticated to NATS by user/password, the gateway with an API key
    method = methods["userpass"]
    worker = spawn(["worker", "--log-level", "DEBUG"], service_env(tmp_path / "w", method.env), "worker")
    await predict_end_to_end(method.url, method.client, worker)  # the worker is up
    env, url = gateway_env(tmp_path, method.env)
    gateway = spawn(["gateway", "--log-level", "DEBUG"], env, "gateway")
    async with aiohttp.ClientSession() as http:
        await wait_health(http, url, 200, gateway)

        async def post(**headers: str) -> tuple[int, bytes]:
            async with http.post(f"{url}/ml/predict", json=BODY, headers=headers) as resp:
                return resp.status, await resp.read()

        # When the key is missing, wrong in its last character, a prefix, longer, or in the wrong scheme: 401
        for headers in (
            {},
            {"X-API-Key": API_KEY[:-1] + ("0" if API_KEY[-1] != "0" else "1")},
            {"X-API-Key": API_KEY[:-1]},
            {"X-API-Key": API_KEY + "0"},
            {"X-API-Key": ""},
            {"Authorization": f"Basic {API_KEY}"},
        ):
            status, body = await post(**headers)
            assert status == 401, headers
            assert API_KEY.encode() not in body
        async with http.get(f"{url}/ml/metrics") as resp:
            assert resp.status == 401
        # Then with the key, in either header, a prediction
        for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
            status, body = await post(**headers)
            assert status == 200, body
            assert Prediction.model_validate_json(body).symbol == "GW"
    # And both stop cleanly, and neither logged the API key or the NATS password
    assert gateway.stop() == 0 and worker.stop() == 0
    for proc in (gateway, worker):
        out = proc.output()
        assert API_KEY not in out and API_KEY[:-1] not in out
        assert method.client["password"] not in out


async def test_gateway_refused_by_nats_answers_503_at_once_and_says_why(
    methods: dict[str, Method], spawn, tmp_path
) -> None:
    # Given a gateway pointed at the user/password server without them
    method = methods["userpass"]
    env, url = gateway_env(tmp_path, {"SPARK_ML_NATS_URL": method.url})
    gateway = spawn(["gateway", "--log-level", "DEBUG"], env, "gateway")
    async with aiohttp.ClientSession() as http:
        # Then it serves HTTP, unhealthy, and answers predictions 503 at once rather than hanging
        await wait_health(http, url, 503, gateway)
        start = time.perf_counter()
        async with http.post(f"{url}/ml/predict", json=BODY, headers={"X-API-Key": API_KEY}) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "nats_unavailable"
        assert time.perf_counter() - start < 1.0
    # And its log says why, and it stops cleanly without having logged the key
    assert gateway.wait_for_output(("Authorization Violation",), 10)
    assert gateway.stop() == 0
    assert API_KEY not in gateway.output()

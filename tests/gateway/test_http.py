"""The HTTP bridge against a real nats-server: every status it answers, the rate limit, the API key, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack
import pytest
from nats.aio.client import Client
from prometheus_client.parser import text_string_to_metric_families

from spark_ml.core.contracts import ErrorReply, Prediction
from spark_ml.core.partition import DEFAULT_PARTITIONS, partition_of, predict_part
from spark_ml.core.subjects import PREDICT, QUEUE_GROUP
from spark_ml.gateway.http import HttpGateway, run_gateway
from spark_ml.worker.settings import Settings
from tests.support.connections import connected
from tests.support.lifecycle import started
from tests.support.predict import SEED_BODY, SEED_SNAPSHOT, BrokenModel, start_service

API_KEY = "k3y-that-must-never-be-logged-5f1c"


def settings_for(nats_url: str, **overrides) -> Settings:
    values: dict[str, Any] = {"nats_url": nats_url, "http_port": 0, "rate_limit": "1000/second"}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def gw_nc(nats_url: str) -> AsyncIterator[Client]:
    """The gateway's own connection (the worker uses the ``nc`` fixture)."""
    async with connected(nats_url, allow_reconnect=False) as client:
        yield client


@pytest.fixture
async def gateway_factory(gw_nc, nats_url):
    async with started() as group:

        async def make(nc: Client | None = None, **overrides) -> HttpGateway:
            return await group.start(HttpGateway(nc or gw_nc, settings_for(nats_url, **overrides)))

        yield make


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(gateway: HttpGateway, path: str = "/ml/predict") -> str:
    return f"http://127.0.0.1:{gateway.port}{path}"


async def post(http: aiohttp.ClientSession, gateway: HttpGateway, body: bytes, **headers: str):
    async with http.post(url(gateway), data=body, headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


# --- 200 -------------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_seed_curl_command_works_as_written(nc, gateway_factory):
    # Given a worker and a gateway (on an ephemeral port instead of 4010)
    await start_service(nc)
    gateway = await gateway_factory()
    # When the seeds' curl command is run, unchanged but for the port
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-w", "\n%{http_code}", "-X", "POST", url(gateway),
        "-H", "Content-Type: application/json",
        "-d", '{"snapshot":{"ts":1696723200000,"mid":45000,"spreadBp":2,"vol1m":1000000,"rsi14":55}}',
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
    body, _, status = out.decode().rpartition("\n")
    # Then it gets a 200 and a Prediction for the seed snapshot
    assert status == "200"
    pred = Prediction.model_validate_json(body)
    assert pred.ts == SEED_SNAPSHOT["ts"] and pred.model_version == "baseline"


async def test_predict_in_json_and_msgpack(nc, gateway_factory, http):
    await start_service(nc)
    gateway = await gateway_factory()
    status, headers, body = await post(http, gateway, SEED_BODY, **{"Content-Type": "application/json"})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    as_json = Prediction.model_validate_json(body)
    packed = msgpack.packb({"snapshot": SEED_SNAPSHOT})
    status, headers, body = await post(http, gateway, packed, **{"Content-Type": "application/msgpack"})
    assert status == 200 and headers["Content-Type"].startswith("application/msgpack")
    assert Prediction.model_validate(msgpack.unpackb(body)).score == as_json.score


async def test_health_and_model_info_with_a_worker(nc, gateway_factory, http):
    _, engine, _ = await start_service(nc)
    gateway = await gateway_factory()
    async with http.get(url(gateway, "/ml/health")) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "nats": True, "worker": True}
    async with http.get(url(gateway, "/ml/model/info")) as resp:
        assert resp.status == 200
        info = await resp.json()
    assert info["version"] == "baseline" and info["featureNames"] == list(engine.model.feature_names)


async def test_predict_asks_the_partition_owner_directly_and_falls_back_to_the_queue_group(nc, gateway_factory, http):
    # Given a responder in the queue group only
    def answer(by: bytes) -> Any:
        async def cb(msg: Any) -> None:
            await nc.publish(msg.reply, b'{"by":"' + by + b'"}', headers={"Content-Type": "application/json"})

        return cb

    await nc.subscribe(PREDICT, queue=QUEUE_GROUP, cb=answer(b"queue"))
    await nc.flush()
    gateway = await gateway_factory()
    snapshot = {"ts": 1696723200000, "mid": 45000.0, "symbol": "EURUSD"}
    as_json = json.dumps({"snapshot": snapshot}).encode()
    as_msgpack = msgpack.packb({"snapshot": snapshot})
    # When nobody answers the symbol's partition subject, plain ml.predict does
    status, _, body = await post(http, gateway, as_json, **{"Content-Type": "application/json"})
    assert status == 200 and json.loads(body) == {"by": "queue"}
    # Once an owner answers ml.predict.part.<n> (n = the symbol's partition of settings.partitions), it is asked
    await nc.subscribe(predict_part(partition_of("EURUSD", DEFAULT_PARTITIONS)), cb=answer(b"owner"))
    await nc.subscribe(predict_part(partition_of("_", DEFAULT_PARTITIONS)), cb=answer(b"owner of _"))
    await nc.flush()
    for body_sent, content_type in ((as_json, "application/json"), (as_msgpack, "application/msgpack")):
        status, _, body = await post(http, gateway, body_sent, **{"Content-Type": content_type})
        assert status == 200 and json.loads(body) == {"by": "owner"}, content_type
    # A snapshot without a symbol is the worker's "_"; a body the gateway cannot read goes to the queue group
    no_symbol = json.dumps({"snapshot": {"ts": 1, "mid": 2.0}}).encode()
    assert json.loads((await post(http, gateway, no_symbol))[2]) == {"by": "owner of _"}
    assert json.loads((await post(http, gateway, b"{not json"))[2]) == {"by": "queue"}


# --- 4xx -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        (b'{"snapshot": {"ts": 1696723200000, "mid": 45000', "decode", "not valid json"),
        (b'{"snapshot": {"ts": 1696723200000, "mid": -1}}', "schema", "mid"),
        (b'{"snapshot": {"mid": 45000}}', "schema", "ts"),
        (b'{"hello": "world"}', "schema", "snapshot"),
    ],
    ids=["bad-json", "negative-mid", "missing-ts", "no-snapshot"],
)
async def test_bad_input_is_400_with_the_reason(nc, gateway_factory, http, body, code, needle):
    await start_service(nc)
    gateway = await gateway_factory()
    status, _, reply = await post(http, gateway, body, **{"Content-Type": "application/json"})
    assert status == 400
    err = ErrorReply.model_validate_json(reply).error
    assert err.code == code and needle in err.message


async def test_oversized_body_is_413_with_or_without_content_length(nc, gateway_factory, http):
    await start_service(nc)
    gateway = await gateway_factory(max_payload=1024)
    big = json.dumps({"snapshot": SEED_SNAPSHOT, "pad": "x" * 4096}).encode()
    status, _, reply = await post(http, gateway, big)
    assert status == 413
    assert ErrorReply.model_validate_json(reply).error.code == "payload_too_large"

    async def chunks():  # chunked transfer: no Content-Length for the early check, aiohttp's limit applies
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    async with http.post(url(gateway), data=chunks()) as resp:
        assert resp.status == 413
    # A body just under the limit still goes through.
    status, _, _ = await post(http, gateway, SEED_BODY)
    assert status == 200


async def test_api_key_is_required_and_never_logged(nc, gateway_factory, http, caplog):
    caplog.set_level(logging.DEBUG)
    await start_service(nc)
    gateway = await gateway_factory(api_key=API_KEY)
    # Without a key, with a wrong one, or with the wrong scheme: 401
    assert (await post(http, gateway, SEED_BODY))[0] == 401
    assert (await post(http, gateway, SEED_BODY, **{"X-API-Key": API_KEY[:-1] + "x"}))[0] == 401
    assert (await post(http, gateway, SEED_BODY, Authorization=f"Basic {API_KEY}"))[0] == 401
    async with http.get(url(gateway, "/ml/metrics")) as resp:
        assert resp.status == 401
    # With the key in either header: served
    assert (await post(http, gateway, SEED_BODY, **{"X-API-Key": API_KEY}))[0] == 200
    assert (await post(http, gateway, SEED_BODY, Authorization=f"Bearer {API_KEY}"))[0] == 200
    async with http.get(url(gateway, "/ml/metrics"), headers={"X-API-Key": API_KEY}) as resp:
        assert resp.status == 200
    # Health stays open for probes
    async with http.get(url(gateway, "/ml/health")) as resp:
        assert resp.status == 200
    # The access log saw every request, and never the key
    assert any(r.name == "aiohttp.access" for r in caplog.records)
    assert API_KEY not in caplog.text
    assert API_KEY[:-1] not in caplog.text


async def test_rate_limit_429_for_a_bursting_client_while_another_is_served(nc, gateway_factory, http):
    await start_service(nc)
    gateway = await gateway_factory(rate_limit="5/second")
    # Given one client (127.0.0.1) sending a burst of 8 within a second
    statuses, retry_after = [], []
    for _ in range(8):
        status, headers, _ = await post(http, gateway, SEED_BODY)
        statuses.append(status)
        retry_after.append(headers.get("Retry-After"))
    # Then the first 5 are served and the rest get 429 with a Retry-After in whole seconds
    assert statuses == [200] * 5 + [429] * 3
    assert retry_after[5:] == ["1"] * 3
    # And another client (source address 127.0.0.2) is still served
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as other:
        assert (await post(other, gateway, SEED_BODY))[0] == 200


# --- 5xx -------------------------------------------------------------------------------------------------


async def test_model_failure_is_500_with_the_worker_reason(nc, gateway_factory, http):
    await start_service(nc, BrokenModel("broken-1"))
    gateway = await gateway_factory()
    status, _, reply = await post(http, gateway, SEED_BODY)
    assert status == 500
    err = ErrorReply.model_validate_json(reply).error
    assert err.code == "model_error" and "weights went missing" in err.message


async def test_no_worker_is_503_at_once_not_after_the_timeout(gateway_factory, http):
    gateway = await gateway_factory(request_timeout_s=5.0)
    start = time.perf_counter()
    status, _, reply = await post(http, gateway, SEED_BODY)
    elapsed = time.perf_counter() - start
    assert status == 503 and ErrorReply.model_validate_json(reply).error.code == "no_worker"
    assert elapsed < 1.0, f"503 took {elapsed:.3f}s: it waited for the timeout"
    async with http.get(url(gateway, "/ml/health")) as resp:
        assert resp.status == 503
        assert await resp.json() == {"status": "unavailable", "nats": True, "worker": False}
    async with http.get(url(gateway, "/ml/model/info")) as resp:
        assert resp.status == 503


async def test_not_connected_to_nats_is_503(gateway_factory, http):
    gateway = await gateway_factory(Client())  # a client that never connected
    status, _, reply = await post(http, gateway, SEED_BODY)
    assert status == 503 and ErrorReply.model_validate_json(reply).error.code == "nats_unavailable"
    async with http.get(url(gateway, "/ml/health")) as resp:
        assert resp.status == 503 and (await resp.json())["nats"] is False


async def test_slow_worker_is_504_and_its_late_reply_never_reaches_the_next_caller(nc, gateway_factory, http):
    # Given a responder on ml.predict that answers each request after the delay the request asks for,
    # echoing its tag, and noting when each request came and each reply left
    pending: set[asyncio.Task[None]] = set()
    came: dict[str, float] = {}
    left: dict[str, float] = {}

    async def slow(msg) -> None:
        ask = json.loads(msg.data)
        came[ask["tag"]] = time.perf_counter()

        async def later() -> None:
            await asyncio.sleep(ask["delay"])
            left[ask["tag"]] = time.perf_counter()
            await msg.respond(json.dumps({"echo": ask["tag"]}).encode())

        task = asyncio.create_task(later())
        pending.add(task)
        task.add_done_callback(pending.discard)

    await nc.subscribe(PREDICT, queue=QUEUE_GROUP, cb=slow)
    await nc.flush()
    await nc.flush()  # twice: one nats-py 2.16 flush() may overtake the SUB (see gateway/service.py)
    gateway = await gateway_factory(request_timeout_s=1.0)
    # When request A is slower than the 1 s timeout (its reply leaves at 1.4 s)
    start = time.perf_counter()
    status, _, reply = await post(http, gateway, b'{"tag": "A", "delay": 1.4}')
    elapsed = time.perf_counter() - start
    assert status == 504 and ErrorReply.model_validate_json(reply).error.code == "timeout"
    assert 1.0 <= elapsed < 1.4
    # And request B (sent at about 1.0 s, answered at about 1.7 s) is waiting when A's late reply arrives
    status, _, reply = await post(http, gateway, b'{"tag": "B", "delay": 0.7}')
    await asyncio.gather(*pending)
    assert came["B"] < left["A"] < left["B"]
    # Then B gets its own reply, never A's
    assert status == 200 and json.loads(reply) == {"echo": "B"}


# --- metrics ---------------------------------------------------------------------------------------------


async def test_metrics_count_requests_by_route_and_code(nc, gateway_factory, http):
    await start_service(nc)
    gateway = await gateway_factory()
    for _ in range(3):
        await post(http, gateway, SEED_BODY)
    await post(http, gateway, b"{bad")
    async with http.get(url(gateway, "/ml/nowhere")) as resp:
        assert resp.status == 404
    async with http.get(url(gateway, "/ml/metrics")) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    requests = "ml_http_requests_total"
    assert samples[(requests, (("code", "200"), ("route", "/ml/predict")))] == 3
    assert samples[(requests, (("code", "400"), ("route", "/ml/predict")))] == 1
    assert samples[(requests, (("code", "404"), ("route", "other")))] == 1
    assert samples[("ml_http_latency_ms_count", (("route", "/ml/predict"),))] == 4
    assert ("ml_http_latency_ms_bucket", (("le", "0.1"), ("route", "/ml/predict"))) in samples


# --- run_gateway -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_status(http: aiohttp.ClientSession, target: str, want: int, within_s: float = 5.0) -> int:
    """Poll ``target`` until it answers ``want`` (bounded); the last status seen."""
    status = -1
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            async with http.get(target) as resp:
                status = resp.status
        except aiohttp.ClientConnectionError:
            status = -1
        if status == want:
            break
        await asyncio.sleep(0.05)
    return status


async def test_run_gateway_serves_until_stopped(nc, nats_url, http):
    await start_service(nc)
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(settings_for(nats_url, http_port=port), stop=stop))
    try:
        assert await wait_for_status(http, f"http://127.0.0.1:{port}/ml/health", 200) == 200
        async with http.post(f"http://127.0.0.1:{port}/ml/predict", data=SEED_BODY) as resp:
            assert resp.status == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"http://127.0.0.1:{port}/ml/health"):
            pass


async def test_run_gateway_without_nats_answers_503_at_once(http):
    port, dead = free_port(), free_port()  # nothing listens on ``dead``
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(settings_for(f"nats://127.0.0.1:{dead}", http_port=port), stop=stop))
    try:
        assert await wait_for_status(http, f"http://127.0.0.1:{port}/ml/health", 503) == 503
        start = time.perf_counter()
        async with http.post(f"http://127.0.0.1:{port}/ml/predict", data=SEED_BODY) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "nats_unavailable"
        assert time.perf_counter() - start < 1.0
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


# --- hostile bytes on the wire -----------------------------------------------------------------------------


async def raw_exchange(gateway: HttpGateway, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes on a fresh connection and return everything the gateway answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def raw_post(path: str, body: bytes, *headers: bytes) -> bytes:
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    head += [b"Content-Length: " + str(len(body)).encode(), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (b"Content-Type: application/json\xff\xfe", "bad_header"),
        (b"Content-Type: \xff\xfe", "bad_header"),
        (b"Content-Type: application/msgpack; x=\xc3", "bad_header"),
        (b"Content-Type: application/json\x7f", None),  # aiohttp's parser refuses a control character itself
    ],
    ids=["json-ff-fe", "only-ff-fe", "msgpack-bad-utf8", "json-del"],
)
async def test_a_content_type_that_is_not_clean_text_is_400_not_500(nc, gateway_factory, header, code, caplog):
    # Given a worker and a gateway
    await start_service(nc)
    gateway = await gateway_factory()
    # When a request carries a Content-Type header with bytes that are not valid UTF-8 (or not printable)
    response = await raw_exchange(gateway, raw_post("/ml/predict", SEED_BODY, header))
    # Then it is refused as bad input, with an error body, and nothing is logged as an error
    assert status_of(response) == 400, response[:200]
    if code is not None:
        assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"] == code
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # And the gateway still answers a good request
    async with aiohttp.ClientSession() as http:
        status, _, _ = await post(http, gateway, SEED_BODY, **{"Content-Type": "application/json"})
    assert status == 200


async def test_undecodable_api_key_and_path_bytes_are_answered_not_500(nc, gateway_factory):
    await start_service(nc)
    gateway = await gateway_factory(api_key=API_KEY)
    for header in (b"X-API-Key: \xff\xfe", b"Authorization: Bearer \xff\xfe"):
        response = await raw_exchange(gateway, raw_post("/ml/predict", SEED_BODY, header))
        assert status_of(response) == 401, response[:200]
    response = await raw_exchange(gateway, raw_post("/ml/pred\xffict", SEED_BODY, b"X-API-Key: " + API_KEY.encode()))
    assert status_of(response) in (400, 404), response[:200]


async def test_slow_headers_and_slow_bodies_are_cut_off_while_others_are_served(nc, gateway_factory, http):
    # Given a gateway whose clients have 0.5 s to send their headers, then their body
    await start_service(nc)
    gateway = await gateway_factory(http_read_timeout_s=0.5)
    request = raw_post("/ml/predict", SEED_BODY, b"Content-Type: application/json")
    head_end = request.index(b"\r\n\r\n") + 4
    start = time.perf_counter()
    # When one connection sends half its header block and another its headers and half its body
    slow_head = await asyncio.open_connection("127.0.0.1", gateway.port)
    slow_head[1].write(request[: head_end // 2])
    slow_body = await asyncio.open_connection("127.0.0.1", gateway.port)
    slow_body[1].write(request[: head_end + len(SEED_BODY) // 2])

    async def closed_after(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> tuple[bytes, float]:
        try:
            got = await asyncio.wait_for(conn[0].read(), 5.0)  # everything until the gateway closes
        finally:
            conn[1].close()
        return got, time.perf_counter() - start

    waits = asyncio.gather(closed_after(slow_head), closed_after(slow_body))
    # Then a normal request on a third connection is answered meanwhile
    status, _, _ = await post(http, gateway, SEED_BODY, **{"Content-Type": "application/json"})
    assert status == 200 and time.perf_counter() - start < 0.5
    # And both slow connections are closed once their time is up (the slow body with a 408), not before
    (head_reply, head_s), (body_reply, body_s) = await waits
    assert head_reply == b"" or status_of(head_reply) in (400, 408), head_reply[:100]
    assert status_of(body_reply) == 408, body_reply[:100]
    assert 0.4 <= head_s < 2.5 and 0.4 <= body_s < 2.5, (head_s, body_s)


async def test_an_idle_keep_alive_connection_is_closed_after_the_read_timeout(nc, gateway_factory):
    await start_service(nc)
    gateway = await gateway_factory(http_read_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        # a complete request on a keep-alive connection is answered, then the silence that follows is bounded
        writer.write(raw_post("/ml/predict", SEED_BODY).replace(b"Connection: close", b"Connection: keep-alive"))
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        assert status_of(first) == 200
        start = time.perf_counter()
        rest = await asyncio.wait_for(reader.read(), 5.0)
        assert rest and time.perf_counter() - start < 2.5  # the body, then EOF
    finally:
        writer.close()

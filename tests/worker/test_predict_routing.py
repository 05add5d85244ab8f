"""``ml.predict`` agrees with the stream (issue 15 point 4): a request for symbol S is answered with the state of
S's partition owner, whichever worker the queue group hands it to, and through the HTTP gateway too; while no
worker owns the partition the answer is 503 ``unavailable``, never another worker's (empty) state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from nats.aio.client import Client
from nats.micro.request import ERROR_CODE_HEADER, ERROR_HEADER

from spark_ml.core import subjects
from spark_ml.core.engine import Engine
from spark_ml.core.partition import partition_of, predict_part, server_mappings, units
from spark_ml.core.subjects import PREDICT
from spark_ml.gateway.http import HttpGateway
from spark_ml.worker.app import WorkerApp
from spark_ml.worker.cluster.owned import OwnedUnits
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsserver import NatsServer
from spark_ml.worker.run import predict_service
from spark_ml.worker.services.predict import PredictService
from spark_ml.worker.settings import Settings
from tests.support.connections import connected
from tests.support.lifecycle import started, until
from tests.support.messages import Collector
from tests.support.predict import ConstantModel, model_info, resolver

P = 16
SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "AUDUSD")
BARS = 80
ASKS = 12
"""Plain ``ml.predict`` requests per symbol: with 3 workers in the queue group, non-owners receive some."""
FAST: dict[str, Any] = {"partitions": P, "member_ttl_s": 1.5, "checkpoint_s": 0.2}
MODES: dict[str, dict[str, Any]] = {
    "core": {},
    "jetstream": {"mode": "jetstream", "pin_ttl_s": 1.0, "ack_wait_s": 30.0},
}


def _snap(symbol: str, i: int, k: int) -> dict[str, Any]:
    return {"ts": 1_000 + i, "mid": (100.0 + (i * 7919 % 13) - 6 + i * 0.01) * (1 + k), "symbol": symbol}


def _ask(symbol: str) -> dict[str, Any]:
    k = SYMBOLS.index(symbol)
    return {"snapshot": _snap(symbol, BARS, k)}


def _answer(data: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(data)
    body.pop("latencyMs", None)  # the only field that depends on who answered, and when
    return body


def _service(app: WorkerApp) -> PredictService:
    service = app._services[0]
    assert isinstance(service, PredictService)
    return service


async def _stream_and_ask(url: str, tmp_path: Path, workers: int, mode: str) -> dict[str, Any]:
    """Start ``workers`` workers, stream every symbol's bars, then ask ``ml.predict`` (and the gateway) about each."""
    settings = Settings(
        nats_url=url,
        metrics_port=0,
        http_port=0,
        registry=tmp_path / "registry",
        rate_limit="1000/second",
        **FAST,
        **MODES[mode],
    )
    async with started() as group, connected(url) as nc:
        apps = [
            await group.start(
                WorkerApp(settings, handle_signals=False, services=[predict_service], serve_metrics=False)
            )
            for _ in range(workers)
        ]

        def balanced() -> bool:
            owned = [app.owned.current for app in apps]
            every = frozenset(range(units(P)))
            return (
                frozenset().union(*owned) == every
                and sum(map(len, owned)) == len(every)
                and max(map(len, owned)) - min(map(len, owned)) <= 1
                and all(_service(app).answering == {n for n in app.owned.current if n < P} for app in apps)
            )

        await until(balanced, 15, f"units balanced over {workers} workers")
        preds = Collector()
        await nc.subscribe(subjects.PREDICTION, cb=preds.cb)
        await nc.flush()
        for i in range(BARS):
            for k, symbol in enumerate(SYMBOLS):
                await nc.publish(subjects.snapshot_for(symbol), msgpack.packb(_snap(symbol, i, k)))
        await preds.wait(BARS * len(SYMBOLS), timeout=30)
        answers: dict[str, Any] = {}
        for symbol in SYMBOLS:
            body = json.dumps(_ask(symbol)).encode()
            replies = await asyncio.gather(
                *(
                    nc.request(PREDICT, body, timeout=5, headers={"Content-Type": "application/json"})
                    for _ in range(ASKS)
                )
            )
            seen = [_answer(r.data) for r in replies]
            assert all(not (r.headers or {}).get(ERROR_CODE_HEADER) for r in replies), replies[0].data
            assert all(s == seen[0] for s in seen), f"{symbol}: answers differ between workers"
            answers[symbol] = seen[0]
        forwarded = sum(_service(app)._part_requests for app in apps)
        if workers > 1:
            assert forwarded > 0, "no request reached a worker that does not own its symbol"
        gateway = await group.start(HttpGateway(nc, settings))
        async with aiohttp.ClientSession() as http:
            for symbol in SYMBOLS:
                for content_type, body in (
                    ("application/json", json.dumps(_ask(symbol)).encode()),
                    ("application/msgpack", msgpack.packb(_ask(symbol))),
                ):
                    async with http.post(
                        f"http://127.0.0.1:{gateway.port}/ml/predict", data=body, headers={"Content-Type": content_type}
                    ) as resp:
                        assert resp.status == 200, await resp.text()
                        data = await resp.read()
                    got = (
                        _answer(data)
                        if content_type.endswith("json")
                        else _answer(json.dumps(msgpack.unpackb(data)).encode())
                    )
                    assert got == answers[symbol], f"{symbol}: the gateway's answer ({content_type}) differs"
        # The gateway addressed the owners on ml.predict.part.<n>: no forwarding for its requests.
        assert sum(_service(app)._part_requests for app in apps) == forwarded + 2 * len(SYMBOLS)
        return answers


@pytest.mark.parametrize("mode", MODES)
async def test_ml_predict_with_three_workers_answers_what_one_worker_answers(tmp_path: Path, mode: str) -> None:
    assert len({partition_of(s, P) for s in SYMBOLS}) > 1, "the symbols must spread over partitions"
    with NatsServer(store_dir=tmp_path / "one", mappings=server_mappings(P)) as server:
        single = await _stream_and_ask(server.url, tmp_path / "one", 1, mode)
    with NatsServer(store_dir=tmp_path / "three", mappings=server_mappings(P)) as server:
        three = await _stream_and_ask(server.url, tmp_path / "three", 3, mode)
    assert single == three
    assert all(a["features"] for a in single.values()), "the answers carry features"


# --- the seam and the hand-off, in-process -------------------------------------------------------------


@pytest.fixture
async def services(nc: Client) -> AsyncIterator[list[PredictService]]:
    """Started services (stopped after the test)."""
    out: list[PredictService] = []
    yield out
    for service in out:
        await service.stop()


async def _start(nc: Client, owned: OwnedUnits, out: list[PredictService], engine: Engine) -> PredictService:
    service = await PredictService.start(
        nc,
        engine=engine,
        metrics=Metrics(),
        resolve_model=resolver(ConstantModel("v2")),
        model_info=lambda: model_info(engine),
        partitions=P,
        owned=owned,
        forward_timeout_s=1.0,
    )
    out.append(service)
    return service


async def _request(nc: Client, symbol: str, **extra: Any) -> tuple[dict[str, Any], dict[str, str]]:
    body = json.dumps({"snapshot": {"ts": 5_000, "mid": 101.5, "symbol": symbol}, **extra}).encode()
    reply = await nc.request(PREDICT, body, timeout=5, headers={"Content-Type": "application/json"})
    return json.loads(reply.data), dict(reply.headers or {})


def test_owned_units_tell_their_listeners_of_changes_only() -> None:
    owned = OwnedUnits()
    heard: list[frozenset[int]] = []
    stop = owned.listen(heard.append)
    owned.set([1, 2])
    owned.set({2, 1})
    owned.set_everything(2)
    stop()
    owned.set([])
    assert heard == [frozenset({1, 2}), frozenset({0, 1, 2})]
    assert owned.current == frozenset() and OwnedUnits.everything(2).current == frozenset({0, 1, 2})


async def test_a_partition_without_owner_is_unavailable_then_answered_by_its_new_owner(
    nats_url: str, services: list[PredictService]
) -> None:
    symbol = "EURUSD"
    k = partition_of(symbol, P)
    async with connected(nats_url) as a_nc, connected(nats_url) as b_nc, connected(nats_url) as nc:
        # Worker A owns every unit but k; nobody owns k.
        a_engine, b_engine = Engine(ConstantModel("a-live", 0.5)), Engine(ConstantModel("b-live", 0.5))
        a = await _start(a_nc, OwnedUnits(set(range(units(P))) - {k}), services, a_engine)
        assert k not in a.answering and len(a.answering) == P - 1
        body, headers = await _request(nc, symbol)
        assert headers[ERROR_CODE_HEADER] == "503" and body["error"]["code"] == "unavailable"
        assert f"partition {k} of {P}" in body["error"]["message"] and "unavailable" in headers[ERROR_HEADER]
        # Worker B takes k over: A hands the request on, and the answer is B's (its state, its model version).
        b_owned = OwnedUnits()
        b = await _start(b_nc, b_owned, services, b_engine)
        b_owned.set({k})
        await until(lambda: b.answering == {k}, 2, "B answers its partition")
        await b_nc.flush()
        answers = [await _request(nc, symbol) for _ in range(4)]
        assert all(h.get(ERROR_CODE_HEADER) is None and body["modelVersion"] == "b-live" for body, h in answers)
        # A partition subject is never forwarded from: A, asked on one of its partitions about k, refuses.
        j = min(a.answering)
        ask = json.dumps({"snapshot": {"ts": 5_000, "mid": 101.5, "symbol": symbol}}).encode()
        wrong = await nc.request(predict_part(j), ask, timeout=5)
        assert (wrong.headers or {}).get(ERROR_CODE_HEADER) == "503"
        assert json.loads(wrong.data)["error"]["code"] == "unavailable"
        # The owner's refusals travel back unchanged, error headers included.
        body, headers = await _request(nc, symbol, model="v404")
        assert headers[ERROR_CODE_HEADER] == "400" and body["error"]["code"] == "unknown_model"
        # B gives k up (a hand-over in progress): unavailable again, not an answer from A's state.
        b_owned.set(set())
        await until(lambda: not b.answering, 2, "B stops answering")
        body, headers = await _request(nc, symbol)
        assert headers[ERROR_CODE_HEADER] == "503" and body["error"]["code"] == "unavailable"
        assert a.answering == set(range(P)) - {k}

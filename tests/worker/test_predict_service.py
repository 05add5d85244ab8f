"""The ml.predict micro service against a real nats-server: replies, error replies, metrics, $SRV discovery."""

from __future__ import annotations

import json
import math

import msgpack
import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from spark_ml.core.contracts import ErrorBody, ErrorReply, Prediction
from spark_ml.core.subjects import PREDICT, SERVICE_NAME
from spark_ml.worker.services.predict import MODEL_INFO
from tests.support.predict import SEED_BODY, SEED_SNAPSHOT, BrokenModel, ConstantModel, SlowModel, start_service

ERR_CODE = "Nats-Service-Error-Code"


def sample(metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _error(msg: Msg, status: str) -> ErrorBody:
    """The error of a refused request (JSON), once its status header says ``status``."""
    assert (msg.headers or {}).get(ERR_CODE) == status
    return ErrorReply.model_validate_json(msg.data).error


async def test_seed_request_in_json_gets_a_json_prediction(nc):
    # Given a running service
    service, engine, metrics = await start_service(nc)
    # When the seed's body is sent as JSON
    msg = await nc.request(PREDICT, SEED_BODY, timeout=2)
    # Then the reply is a valid Prediction in JSON, from the live model, without error headers
    assert ERR_CODE not in (msg.headers or {})
    assert msg.headers["Content-Type"] == "application/json"
    pred = Prediction.model_validate_json(msg.data)
    assert (pred.ts, pred.symbol, pred.model_version) == (SEED_SNAPSHOT["ts"], "_", engine.model.version)
    assert set(pred.features) == set(engine.model.feature_names)
    assert pred.features["rsi_14"] == 55.0 and pred.features["spread_bp"] == 2.0
    assert pred.signal == ("buy" if pred.score >= 0.55 else "sell" if pred.score <= 0.45 else "hold")
    assert sample(metrics, "ml_predict_requests_total", model_version="baseline", status="ok") == 1
    assert sample(metrics, "ml_predict_latency_ms_count", model_version="baseline") == 1
    await service.stop()


async def test_seed_request_in_msgpack_gets_a_msgpack_prediction(nc):
    service, engine, _ = await start_service(nc)
    msg = await nc.request(PREDICT, msgpack.packb({"snapshot": SEED_SNAPSHOT}), timeout=2)
    assert msg.headers["Content-Type"] == "application/msgpack"
    pred = Prediction.model_validate(msgpack.unpackb(msg.data))
    assert pred.ts == SEED_SNAPSHOT["ts"] and pred.model_version == "baseline"
    # The same snapshot in JSON scores the same: one engine, two encodings.
    as_json = Prediction.model_validate_json((await nc.request(PREDICT, SEED_BODY, timeout=2)).data)
    assert as_json.score == pred.score and as_json.features == pred.features
    await service.stop()


async def test_content_type_header_selects_json(nc):
    service, _, _ = await start_service(nc)
    body = b' {"snapshot": {"ts": 1, "mid": 10.5, "symbol": "BTCUSD"}}'  # leading space: not sniffable as JSON
    msg = await nc.request(PREDICT, body, timeout=2, headers={"Content-Type": "application/json"})
    assert Prediction.model_validate_json(msg.data).symbol == "BTCUSD"
    await service.stop()


async def test_requests_do_not_advance_the_stream_feature_state(nc):
    service, engine, _ = await start_service(nc)
    body = json.dumps({"snapshot": {**SEED_SNAPSHOT, "symbol": "ETHUSD"}}).encode()
    first = Prediction.model_validate_json((await nc.request(PREDICT, body, timeout=2)).data)
    second = Prediction.model_validate_json((await nc.request(PREDICT, body, timeout=2)).data)
    assert first.features == second.features
    assert "ETHUSD" not in engine.features
    await service.stop()


BAD_INPUTS = [
    pytest.param(b"{not json", "decode", "json", id="bad-json"),
    pytest.param(b"\xc1", "decode", "msgpack", id="bad-msgpack"),
    pytest.param(b"", "decode", "msgpack", id="empty"),
    pytest.param(msgpack.packb([1, 2]), "schema", "msgpack", id="msgpack-list-not-a-map"),
    pytest.param(b'{"snap": {}}', "schema", "json", id="no-snapshot"),
    pytest.param(b'{"snapshot": [1, 2]}', "schema", "json", id="snapshot-not-a-map"),
    pytest.param(b'{"snapshot": {"mid": 1.0}}', "schema", "json", id="no-ts"),
    pytest.param(b'{"snapshot": {"ts": 1, "mid": -5}}', "schema", "json", id="negative-mid"),
    pytest.param(b'{"snapshot": {"ts": 1, "mid": NaN}}', "schema", "json", id="nan-mid"),
    pytest.param(b'{"snapshot": {"ts": 1, "mid": "1.5"}}', "schema", "json", id="string-mid"),
    pytest.param(b'{"snapshot": {"ts": 1, "mid": 1, "rsi14": 101}}', "schema", "json", id="rsi-out-of-range"),
    pytest.param(msgpack.packb({"snapshot": {"ts": 1, "mid": math.inf}}), "schema", "msgpack", id="inf-mid-msgpack"),
    pytest.param(b'{"snapshot": {"ts": 1, "mid": 1}, "model": 7}', "schema", "json", id="model-not-a-string"),
]


@pytest.mark.parametrize(("body", "code", "encoding"), BAD_INPUTS)
async def test_bad_input_gets_a_400_error_reply_in_the_request_encoding(nc, body, code, encoding):
    service, _, metrics = await start_service(nc)
    msg = await nc.request(PREDICT, body, timeout=2)
    assert msg.headers[ERR_CODE] == "400"
    assert msg.headers["Nats-Service-Error"].startswith(f"{code}: ")
    data = json.loads(msg.data) if encoding == "json" else msgpack.unpackb(msg.data)
    reply = ErrorReply.model_validate(data)
    assert reply.error.code == code and reply.error.message
    assert sample(metrics, "ml_predict_requests_total", model_version="baseline", status="invalid") == 1
    assert sample(metrics, "ml_model_errors_total", error_type="invalid_input") == 1
    assert sample(metrics, "ml_predict_requests_total", model_version="baseline", status="ok") == 0
    await service.stop()


@pytest.mark.parametrize(
    ("model", "max_payload", "body", "status", "code", "message"),
    [
        (
            None,
            1024,
            json.dumps({"snapshot": SEED_SNAPSHOT, "pad": "x" * 2000}).encode(),
            "413",
            "payload_too_large",
            "",
        ),
        (BrokenModel("broken-1"), 64 * 1024, SEED_BODY, "500", "model_error", "weights went missing"),
        (ConstantModel("wild", value=1.5), 64 * 1024, SEED_BODY, "500", "model_output", ""),
    ],
    ids=["oversized-413", "model-failure-500", "model-output-out-of-range-500"],
)
async def test_a_refused_request_gets_its_status_and_code_and_is_counted(
    nc, model, max_payload: int, body: bytes, status: str, code: str, message: str
) -> None:
    # Given a service whose model fails, or a request over the size limit
    service, engine, metrics = await start_service(nc, model, max_payload=max_payload)
    # When it is asked
    msg = await nc.request(PREDICT, body, timeout=2)
    # Then the error reply carries the status and code, and the refusal is counted with its status and type
    err = _error(msg, status)
    assert err.code == code and message in err.message
    outcome = "invalid" if status.startswith("4") else "error"
    error_type = "invalid_input" if status.startswith("4") else code
    version = engine.model.version
    assert sample(metrics, "ml_predict_requests_total", model_version=version, status=outcome) == 1
    assert sample(metrics, "ml_model_errors_total", error_type=error_type) == 1
    await service.stop()


async def test_model_version_can_be_chosen_and_unknown_versions_are_refused(nc):
    service, _, metrics = await start_service(nc)
    ok = await nc.request(PREDICT, json.dumps({"snapshot": SEED_SNAPSHOT, "model": "v2"}).encode(), timeout=2)
    pred = Prediction.model_validate_json(ok.data)
    assert (pred.model_version, pred.score) == ("v2", 0.75)
    bad = await nc.request(PREDICT, json.dumps({"snapshot": SEED_SNAPSHOT, "model": "v9"}).encode(), timeout=2)
    err = _error(bad, "400")
    assert err.code == "unknown_model" and "v9" in err.message
    assert sample(metrics, "ml_predict_requests_total", model_version="v2", status="ok") == 1
    assert sample(metrics, "ml_predict_requests_total", model_version="baseline", status="invalid") == 1
    await service.stop()


async def test_model_info_endpoint(nc):
    service, engine, _ = await start_service(nc)
    msg = await nc.request(MODEL_INFO, b"", timeout=2)
    info = json.loads(msg.data)
    assert info["version"] == "baseline" and info["featureNames"] == list(engine.model.feature_names)
    await service.stop()


async def test_srv_ping_info_and_stats_with_honest_error_counts(nc):
    service, _, _ = await start_service(nc)
    # Given 2 good requests, 3 bad ones and one for an unknown model
    for _ in range(2):
        await nc.request(PREDICT, SEED_BODY, timeout=2)
    for body in (b"{nope", b'{"snapshot": {}}', b"\xc1"):
        await nc.request(PREDICT, body, timeout=2)
    await nc.request(PREDICT, json.dumps({"snapshot": SEED_SNAPSHOT, "model": "v9"}).encode(), timeout=2)
    # When the NATS micro discovery subjects are asked
    ping = json.loads((await nc.request(f"$SRV.PING.{SERVICE_NAME}", b"", timeout=2)).data)
    info = json.loads((await nc.request(f"$SRV.INFO.{SERVICE_NAME}", b"", timeout=2)).data)
    stats = json.loads((await nc.request(f"$SRV.STATS.{SERVICE_NAME}.{service.id}", b"", timeout=2)).data)
    # Then the service is listed with both endpoints, and STATS counts every error reply
    assert ping["name"] == SERVICE_NAME and ping["id"] == service.id
    assert {(e["name"], e["subject"], e["queue_group"]) for e in info["endpoints"]} == {
        ("predict", PREDICT, "ml-workers"),
        ("model-info", MODEL_INFO, "ml-workers"),
    }
    predict = next(e for e in stats["endpoints"] if e["name"] == "predict")
    assert (predict["num_requests"], predict["num_errors"]) == (6, 4)
    assert predict["last_error"].startswith("400:unknown_model:")
    assert predict["data"] == {"errors_by_status": {"400": 4}}
    assert predict["processing_time"] > 0
    await service.stop()


async def test_two_workers_share_the_load_in_the_queue_group(nc, nats_url):
    other_nc = await nats.connect(nats_url)
    try:
        first, _, first_metrics = await start_service(nc)
        second, _, second_metrics = await start_service(other_nc)
        for _ in range(40):
            await nc.request(PREDICT, SEED_BODY, timeout=2)
        counts = [
            sample(m, "ml_predict_requests_total", model_version="baseline", status="ok")
            for m in (first_metrics, second_metrics)
        ]
        assert sum(counts) == 40
        assert min(counts) > 0  # a random queue-group pick: both idle 40 times in a row has odds 2**-39
        await first.stop()
        await second.stop()
    finally:
        await other_nc.close()


async def test_stop_unsubscribes_and_later_requests_get_no_responders(nc):
    service, _, _ = await start_service(nc)
    await service.stop()
    await service.stop()  # idempotent
    with pytest.raises(NoRespondersError):
        await nc.request(PREDICT, SEED_BODY, timeout=2)


async def test_drain_answers_queued_requests_then_stop_is_a_no_op(nats_url):
    server_side = await nats.connect(nats_url)
    caller = await nats.connect(nats_url)
    try:
        # A model slow enough (2 ms a call) that requests are still queued in the client when the drain starts
        service, _, _ = await start_service(server_side, SlowModel("slow"))
        inbox = caller.new_inbox()
        replies = await caller.subscribe(f"{inbox}.*")
        # Given 50 requests delivered to the worker's connection (the flushes return after the server routed them)
        for i in range(50):
            await caller.publish(PREDICT, SEED_BODY, reply=f"{inbox}.{i}")
        # Twice: nats-py 2.16's flush() can overtake commands still in its pending buffer (gateway/service.py)
        await caller.flush()
        await caller.flush()
        # When the worker drains its connection, then stops the service
        await server_side.drain()
        await service.stop()
        # Then every request got its prediction
        got = [await replies.next_msg(timeout=2) for _ in range(50)]
        assert sorted(int(m.subject.rsplit(".", 1)[1]) for m in got) == list(range(50))
        assert all(Prediction.model_validate_json(m.data).model_version == "slow" for m in got)
    finally:
        await caller.close()
        if not server_side.is_closed:
            await server_side.close()

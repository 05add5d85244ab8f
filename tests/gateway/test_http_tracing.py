"""One trace from an HTTP predict call through the gateway, ``ml.predict`` and (when handed on) the partition's owner,
recorded by the SDK's in-memory exporter; real gateway, workers and nats-server."""

from __future__ import annotations

import json
import random
from typing import Any

import aiohttp
from nats.aio.client import Client
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from spark_ml.core.subjects import PREDICT
from spark_ml.core.tracecontext import TRACEPARENT
from spark_ml.gateway.http import HttpGateway
from spark_ml.worker.app import WorkerApp
from spark_ml.worker.intake import PartitionedCoreIntake
from spark_ml.worker.run import predict_service
from spark_ml.worker.settings import Settings
from tests.support.connections import connected
from tests.support.lifecycle import started, until
from tests.support.tracing import Recorded, traceparent

GATEWAY_SPAN = "POST /ml/predict"


def _settings(nats_url: str, tmp_path: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "http_port": 0,
        "metrics_port": 0,
        "rate_limit": "1000/second",
        "registry": tmp_path / "registry",
        "tracing": "on",
        "member_ttl_s": 1.5,
    }
    values.update(overrides)
    return Settings(**values)


def _in_trace(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


async def test_an_http_predict_call_is_one_trace_across_gateway_and_worker(nats_url: str, tmp_path) -> None:
    rec = Recorded()
    settings = _settings(nats_url, tmp_path)
    async with started() as group, connected(nats_url) as gw_nc, aiohttp.ClientSession() as http:
        await group.start(WorkerApp(settings, handle_signals=False, services=[predict_service], tracing=rec.tracing))
        gateway = await group.start(HttpGateway(gw_nc, settings, tracing=rec.tracing))
        url = f"http://127.0.0.1:{gateway.port}/ml/predict"
        body = json.dumps({"snapshot": {"ts": 1, "mid": 100.0, "symbol": "EURUSD"}})
        # When a caller in a trace of its own, and one without, ask for a prediction
        trace_id, span_id = random.getrandbits(128) | 1, random.getrandbits(64) | 1
        headers = {"Content-Type": "application/json", TRACEPARENT: traceparent(trace_id, span_id)}
        async with http.post(url, data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 200
        await until(lambda: len(rec.spans(PREDICT)) >= 2 and len(rec.spans(GATEWAY_SPAN)) >= 2, 5, "four spans")
    # Then the caller's trace holds the gateway's span (its child) and the worker's (the gateway span's child)
    (gw,) = [s for s in _in_trace(rec.spans(GATEWAY_SPAN), trace_id)]
    (worker,) = [s for s in _in_trace(rec.spans(PREDICT), trace_id)]
    assert gw.parent is not None and gw.parent.span_id == span_id and gw.kind is SpanKind.SERVER
    assert worker.parent is not None and gw.context is not None and worker.parent.span_id == gw.context.span_id
    assert gw.attributes is not None and gw.attributes["http.response.status_code"] == 200
    # and the call without a trace is a trace of its own, rooted at the gateway, with the worker in it
    (other,) = [s for s in rec.spans(GATEWAY_SPAN) if s is not gw]
    assert other.parent is None and other.context is not None
    (other_worker,) = _in_trace(rec.spans(PREDICT), other.context.trace_id)
    assert other_worker.parent is not None and other_worker.parent.span_id == other.context.span_id


async def test_a_request_handed_to_the_partitions_owner_stays_in_the_trace(nats_url: str, tmp_path, nc: Client) -> None:
    rec = Recorded()
    settings = _settings(nats_url, tmp_path)
    async with started() as group:
        a = await group.start(
            WorkerApp(settings, handle_signals=False, services=[predict_service], tracing=rec.tracing)
        )
        b = await group.start(
            WorkerApp(settings, handle_signals=False, services=[predict_service], tracing=rec.tracing)
        )
        ia, ib = a.intake, b.intake
        assert isinstance(ia, PartitionedCoreIntake) and isinstance(ib, PartitionedCoreIntake)
        await until(lambda: bool(ia.owned) and bool(ib.owned) and not ia.owned & ib.owned, 5, "units split")
        await until(lambda: len(ia.owned | ib.owned) == 17, 5, "every unit owned")
        # When plain ml.predict requests (any worker of the queue group takes them) carry a trace each
        traces: dict[int, int] = {}
        for i in range(24):
            trace_id, span_id = random.getrandbits(128) | 1, random.getrandbits(64) | 1
            traces[trace_id] = span_id
            body = json.dumps({"snapshot": {"ts": 1, "mid": 100.0, "symbol": f"S{i}"}}).encode()
            reply = await nc.request(PREDICT, body, timeout=5, headers={TRACEPARENT: traceparent(trace_id, span_id)})
            assert b'"error"' not in reply.data, reply.data
        await until(lambda: len(rec.spans(PREDICT)) >= 24, 5, "a span per request")
    handed_on = 0
    for trace_id, span_id in traces.items():
        spans = sorted(_in_trace(rec.spans(PREDICT), trace_id), key=lambda s: s.start_time or 0)
        first = spans[0]
        assert first.parent is not None and first.parent.span_id == span_id
        if len(spans) == 2:  # the worker that took it did not own the partition: the owner's span is its child
            handed_on += 1
            assert first.context is not None and spans[1].parent is not None
            assert spans[1].parent.span_id == first.context.span_id
        else:
            assert len(spans) == 1
    assert handed_on, "no request was handed on (each worker owns about half the partitions: 24 requests)"

"""Trace context through a real worker on a real nats-server: a snapshot's ``traceparent`` goes on to its
prediction and its dead letter, with tracing off (unchanged) and on (a span per batch, linked to each message;
a span per dead letter), recorded by the SDK's in-memory exporter."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client
from opentelemetry.trace import SpanKind, StatusCode

from spark_ml.core import subjects
from spark_ml.core.models import BaselineModel
from spark_ml.core.tracecontext import TRACEPARENT, clean_traceparent, parse_traceparent
from spark_ml.worker.app import WorkerApp
from spark_ml.worker.settings import Settings
from tests.support.lifecycle import started, until
from tests.support.messages import Collector
from tests.support.tracing import Recorded, parent_of, trace_of, traceparent

BATCH_SPAN = "process market.snapshot"
DLQ_SPAN = "publish ml.dlq.snapshot"


def _snap(ts: int, symbol: str) -> bytes:
    return msgpack.packb({"ts": ts, "mid": 100.0 + ts % 5, "symbol": symbol})


def _ids() -> tuple[int, int]:
    return random.getrandbits(128) | 1, random.getrandbits(64) | 1


@pytest.fixture
async def traced_worker(settings_factory) -> AsyncIterator[Callable[..., Awaitable[tuple[WorkerApp, Recorded]]]]:
    """``start(tracing=True)``: a worker whose spans go to an in-memory exporter (tracing=False: off)."""
    async with started() as group:

        async def start(tracing: bool = True, **overrides: Any) -> tuple[WorkerApp, Recorded]:
            rec = Recorded()
            settings: Settings = settings_factory(tracing="on" if tracing else "off", **overrides)
            app = WorkerApp(settings, handle_signals=False, tracing=rec.tracing if tracing else None)
            return await group.start(app), rec

        yield start


async def test_a_snapshot_trace_continues_on_its_prediction_through_a_linked_batch_span(
    nc: Client, traced_worker, collect, uid: str
) -> None:
    # Given a worker with tracing on
    app, rec = await traced_worker()
    preds: Collector = await collect(subjects.PREDICTION)
    # When one snapshot with a traceparent is published, alone
    trace_id, span_id = _ids()
    sym = f"T{uid}"
    await nc.publish(subjects.snapshot_for(sym), _snap(1, sym), headers={TRACEPARENT: traceparent(trace_id, span_id)})
    (msg,) = await preds.wait(1)
    await until(lambda: bool(rec.spans(BATCH_SPAN)), 5, "the batch span")
    # Then its prediction carries the same trace, its parent the batch span, which links to the snapshot
    (batch,) = rec.spans(BATCH_SPAN)
    out = (msg.headers or {}).get(TRACEPARENT)
    assert trace_of(out) == trace_id
    assert batch.context is not None and batch.context.trace_id == trace_id
    assert parent_of(out) == batch.context.span_id
    assert batch.parent is not None and batch.parent.span_id == span_id  # one trace in the batch: its child
    assert [(ln.context.trace_id, ln.context.span_id) for ln in batch.links] == [(trace_id, span_id)]
    assert batch.kind is SpanKind.CONSUMER
    assert batch.attributes is not None and batch.attributes["messaging.batch.message_count"] == 1
    assert (msg.headers or {}).get("Content-Type") == "application/msgpack"


async def test_a_batch_of_many_traces_links_each_and_every_prediction_keeps_its_trace(
    nc: Client, traced_worker, collect, uid: str
) -> None:
    app, rec = await traced_worker()
    preds: Collector = await collect(subjects.PREDICTION)
    # When 300 snapshots of 300 traces (and 100 without one) are published in one burst (batches of many)
    sent: dict[int, tuple[int, int]] = {}
    for i in range(1, 401):
        sym = f"S{i % 7}{uid}"
        if i % 4:
            sent[i] = _ids()
            tp = traceparent(*sent[i])
            await nc.publish(subjects.snapshot_for(sym), _snap(i, sym), headers={TRACEPARENT: tp})
        else:
            await nc.publish(subjects.snapshot_for(sym), _snap(i, sym))
    await nc.flush()
    msgs = await preds.wait(400)
    await until(lambda: sum(len(s.links) for s in rec.spans(BATCH_SPAN)) >= 300, 5, "every link")
    batches = rec.spans(BATCH_SPAN)
    # Then every prediction has a traceparent: its snapshot's trace when it had one, else its batch's
    batch_ids = {(b.context.trace_id, b.context.span_id) for b in batches if b.context is not None}
    for msg in msgs:
        ts = msgpack.unpackb(msg.data)["ts"]
        out = (msg.headers or {}).get(TRACEPARENT)
        if ts in sent:
            assert trace_of(out) == sent[ts][0]
        else:
            assert (trace_of(out), parent_of(out)) in batch_ids
    # and the batch spans link to every traced snapshot, once
    links = [(ln.context.trace_id, ln.context.span_id) for b in batches for ln in b.links]
    assert sorted(links) == sorted(sent.values())
    assert sum(b.attributes["messaging.batch.message_count"] for b in batches if b.attributes) == 400
    assert len(batches) < 400  # spans per batch, not per message


async def test_a_dead_letter_carries_the_trace(nc: Client, traced_worker, collect, uid: str) -> None:
    app, rec = await traced_worker()
    dlq: Collector = await collect(subjects.DLQ)
    trace_id, span_id = _ids()
    sym = f"D{uid}"
    # When an undecodable payload and an out-of-order snapshot (refused inside a batch) carry traces
    await nc.publish(subjects.snapshot_for(sym), b"\xc1", headers={TRACEPARENT: traceparent(trace_id, span_id)})
    await nc.publish(subjects.snapshot_for(sym), _snap(10, sym))
    await nc.flush()
    late_trace, late_span = _ids()
    await until(lambda: app.processor is not None and app.processor.published >= 1, 5, "the first prediction")
    await nc.publish(
        subjects.snapshot_for(sym), _snap(5, sym), headers={TRACEPARENT: traceparent(late_trace, late_span)}
    )
    msgs = await dlq.wait(2)
    # Then each dead letter continues its own trace through a dead-letter span, marked as an error
    by_reason = {(m.headers or {})[subjects.H_ERROR]: (m.headers or {}).get(TRACEPARENT) for m in msgs}
    spans = {s.attributes["spark_ml.reason"]: s for s in rec.spans(DLQ_SPAN) if s.attributes}
    for reason, (tid, sid) in (("decode", (trace_id, span_id)), ("out_of_order", (late_trace, late_span))):
        out = by_reason[reason]
        span = spans[reason]
        assert trace_of(out) == tid and span.context is not None and span.context.trace_id == tid
        assert parent_of(out) == span.context.span_id
        assert span.parent is not None and span.parent.span_id == sid
        assert span.status.status_code is StatusCode.ERROR


async def test_with_tracing_off_the_traceparent_goes_on_unchanged(nc: Client, traced_worker, collect, uid: str) -> None:
    app, rec = await traced_worker(tracing=False)
    app.shadow.model = BaselineModel()
    preds: Collector = await collect(subjects.PREDICTION)
    shadow: Collector = await collect(subjects.PREDICTION_SHADOW)
    dlq: Collector = await collect(subjects.DLQ)
    sym = f"O{uid}"
    tp = traceparent(*_ids())
    bad_tp = traceparent(*_ids())
    await nc.publish(subjects.snapshot_for(sym), _snap(1, sym), headers={TRACEPARENT: tp})
    (first_shadow,) = await shadow.wait(1)  # the first batch: the shadow model is not busy yet
    assert (first_shadow.headers or {}).get(TRACEPARENT) == tp
    await nc.publish(subjects.snapshot_for(sym), _snap(2, sym))
    await nc.publish(subjects.snapshot_for(sym), _snap(3, sym), headers={TRACEPARENT: "00-not-a-trace\r\nX: y"})
    await nc.publish(subjects.snapshot_for(sym), b"{", headers={TRACEPARENT: bad_tp})
    msgs = await preds.wait(3)
    (dead,) = await dlq.wait(1)
    # Then the prediction (and the shadow one, above) carries the snapshot's traceparent as it was; none is made
    # up, a malformed one is dropped
    assert [(m.headers or {}).get(TRACEPARENT) for m in msgs] == [tp, None, None]
    assert (dead.headers or {}).get(TRACEPARENT) == bad_tp
    assert app.tracing is None and not rec.spans()


def test_traceparent_checks() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(good) == (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, 1)
    assert clean_traceparent(f" {good} ") == good
    for bad in (
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff is forbidden
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX: y",
        "",
        "x" * 1000,
    ):
        assert clean_traceparent(bad) is None, bad
        assert parse_traceparent(bad) is None, bad
    for other in (good, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", f"{good}-extra", good[:-1]):
        assert (clean_traceparent(other) is None) == (parse_traceparent(other) is None), other


def test_with_tracing_off_no_opentelemetry_module_is_imported() -> None:
    # The SDK is an optional dependency: serving with tracing off must not need it (a fresh interpreter).
    code = (
        "import sys\n"
        "import spark_ml.worker.app, spark_ml.worker.run, spark_ml.gateway.http, spark_ml.worker.up\n"
        "from spark_ml.worker.tracing_optional import tracing_for\n"
        "from spark_ml.worker.settings import Settings\n"
        "assert tracing_for(Settings(), 'x') is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout

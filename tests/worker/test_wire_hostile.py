"""Hostile frames at the NATS protocol level, written over a raw socket to a real ``spark-ml worker``.

Each frame once ended nats-py's read loop (issue 14): a subject or reply subject that is not UTF-8, a header
block whose status line is not UTF-8 or that is only ``NATS/1.0``. Now each one is dead-lettered (reason
``decode``, the raw payload kept, the subject escaped in ``Spark-Ml-Subject``), delivered without its headers,
or counted in ``ml_wire_errors_total{kind}``, and the worker goes on: the next good snapshot is predicted and
``ml.predict`` answers within a second. A payload at the server's ``max_payload`` is dead-lettered cut to fit
(``Spark-Ml-Truncated``), in JetStream mode terminated, and never costs the connection. A worker whose
connection is closed for good, or whose reader stopped, fails ``/healthz`` and exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
from nats.aio.client import Client
from nats.errors import MaxPayloadError

from spark_ml.core import subjects
from spark_ml.core.engine import Engine
from spark_ml.core.models import BaselineModel
from spark_ml.worker.connect import connect
from spark_ml.worker.intake import CoreIntake
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsio import batchpub
from spark_ml.worker.pipeline.publish import header_block_size
from spark_ml.worker.pipeline.stream import StreamProcessor
from tests.support.connections import RawPublisher
from tests.support.jetstream import intake_state
from tests.support.messages import SEED, Collector
from tests.support.processes import WorkerProcess, http_status, worker_env

PROMPT_S = 1.0
"""How soon after a hostile frame the worker must predict a good snapshot and answer ml.predict."""


def hpub(subject: bytes, header: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    """An ``HPUB`` frame with any header block, sizes computed."""
    r = b" " + reply if reply else b""
    return b"HPUB %s%s %d %d\r\n%s%s\r\n" % (subject, r, len(header), len(header) + len(payload), header, payload)


def pub(subject: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    r = b" " + reply if reply else b""
    return b"PUB %s%s %d\r\n%s\r\n" % (subject, r, len(payload), payload)


BAD = b"\xff\xfe"
GOOD_BODY = msgpack.packb({"snapshot": {**SEED, "symbol": "HOSTILE"}})


@dataclass(frozen=True)
class Case:
    """One hostile frame and what it must become: ``dlq`` (a ``decode`` dead letter with this escaped subject)
    or ``counted`` (this kind of ``ml_wire_errors_total`` moves)."""

    frame: bytes
    kind: str
    dlq_subject: str | None = None


CASES = {
    "subject not UTF-8": Case(pub(b"market.snapshot." + BAD, b"abc"), "subject", "market.snapshot.\\xff\\xfe"),
    "subject not UTF-8, with headers": Case(
        hpub(b"market.snapshot." + BAD, b"NATS/1.0\r\nA: b\r\n\r\n", b"abc"), "subject", "market.snapshot.\\xff\\xfe"
    ),
    "status line not UTF-8": Case(hpub(b"market.snapshot.HDR1", b"NATS/1.0 " + BAD + b"\r\n\r\n", b"abc"), "headers"),
    "header block only NATS/1.0": Case(hpub(b"market.snapshot.HDR2", b"NATS/1.0", b"abc"), "headers"),
    "ml.predict reply not UTF-8": Case(pub(b"ml.predict", GOOD_BODY, b"_INBOX." + BAD), "reply"),
    "ml.predict reply not UTF-8, with headers": Case(
        hpub(b"ml.predict", b"NATS/1.0\r\nA: b\r\n\r\n", GOOD_BODY, b"_INBOX." + BAD), "reply"
    ),
    "analytics subject not UTF-8": Case(pub(b"analytics.pnl." + BAD, b"{}"), "subject"),
}


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn(nats_url, **settings)``: a started ``spark-ml worker`` child, killed at teardown."""
    procs: list[WorkerProcess] = []

    def start(nats_url: str, **settings: object) -> WorkerProcess:
        env = worker_env(nats_url, tmp_path / "registry", **settings)
        procs.append(WorkerProcess(env, tmp_path / f"worker-{len(procs)}.log").start())
        return procs[-1]

    try:
        yield start
    finally:
        for p in procs:
            p.kill()


class Probe:
    """Good traffic after hostile frames: a snapshot predicted and ml.predict answered, each within PROMPT_S."""

    def __init__(self, nc: Client, preds: Collector) -> None:
        self.nc, self.preds = nc, preds
        self.ts = SEED["ts"]

    async def still_serving(self, what: str) -> None:
        self.ts += 1
        want = len(self.preds.msgs) + 1
        await self.nc.publish(subjects.snapshot_for("GOOD"), msgpack.packb({**SEED, "ts": self.ts}))
        try:
            await self.preds.wait(want, timeout=PROMPT_S)
        except TimeoutError:
            pytest.fail(f"after {what}: no prediction within {PROMPT_S}s")
        reply = await self.nc.request(
            subjects.PREDICT, msgpack.packb({"snapshot": {**SEED, "ts": self.ts + 1}}), timeout=PROMPT_S
        )
        assert "score" in msgpack.unpackb(reply.data), (what, reply.data[:200])


@pytest.mark.parametrize("mode", ["core", "jetstream"])
async def test_no_single_frame_silences_the_worker(nats_url: str, nc: Client, spawn, collect, mode: str) -> None:
    # Given a real worker, and a collector of its predictions and dead letters
    worker = await spawn(nats_url, mode=mode).ready()
    preds, dlq = await collect(subjects.PREDICTION), await collect(subjects.DLQ)
    probe = Probe(nc, preds)  # (a frame's dead letter is checked on the plain core intake below)
    await probe.still_serving("start")
    before = await worker.scrape()
    async with RawPublisher.connect(nats_url) as raw:
        for name, case in CASES.items():
            # When one hostile frame arrives (the server has it once the PING after it is answered)
            n_dead = len(dlq.msgs)
            await raw.send(case.frame)
            # Then the worker still predicts and answers, at once
            await probe.still_serving(name)
            # ... and whatever became of the frame, it was not taken for a good snapshot
            assert all(m.headers[subjects.H_ERROR] == "decode" for m in dlq.msgs[n_dead:]), name
    # Then every kind was counted, the worker is alive and ready, and it never lost its connection
    after = await worker.scrape()
    for kind in {c.kind for c in CASES.values()}:
        if mode == "jetstream" and kind != "reply":
            # Snapshots reach the worker from the stream (the server stores them, and may normalise a header
            # block): only what comes straight from a publisher (ml.predict) is sure to reach it as sent.
            continue
        moved = after.total("ml_wire_errors_total", kind=kind) - before.total("ml_wire_errors_total", kind=kind)
        assert moved >= 1, (kind, moved)
    assert after.total("ml_nats_reconnects_total") == 0
    base = worker.metrics_url.removesuffix("/metrics")
    assert http_status(f"{base}/healthz") == 200
    assert http_status(f"{base}/readyz") == 200
    assert worker.proc is not None and worker.proc.poll() is None
    log = worker.log()
    assert "encountered error" not in log
    for kind in ("subject", "reply", "headers"):
        assert log.count(f"a message's {kind} could not be taken as sent") <= 1  # once per kind


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.frame.split(b" ", 2)[1].startswith(b"market.")])
async def test_an_undecodable_snapshot_frame_is_a_decode_dead_letter(
    settings_factory, nc: Client, collect, name: str
) -> None:
    # Given the core intake's queue-group subscriptions on a worker connection, feeding a stream processor
    settings = settings_factory()
    metrics = Metrics()
    worker_nc = await connect(settings, name="wire-hostile", metrics=metrics)
    intake = CoreIntake(worker_nc)
    processor = StreamProcessor(Engine(BaselineModel()), metrics, intake.output, settlement=intake.settlement)
    processor.start()
    try:
        await intake.start(processor)
        await worker_nc.flush()
        await worker_nc.flush()
        preds, dlq = await collect(subjects.PREDICTION), await collect(subjects.DLQ)
        case = CASES[name]
        # When the hostile frame arrives, then a good snapshot
        async with RawPublisher.connect(settings.nats_url) as raw:
            await raw.send(case.frame)
        await nc.publish(subjects.snapshot_for("GOOD"), msgpack.packb(SEED))
        # Then the frame is one dead letter: reason decode, the payload kept, the subject escaped when it is not
        # UTF-8; the good snapshot is predicted; the wire error is counted
        await dlq.wait(1, timeout=PROMPT_S)
        await preds.wait(1, timeout=PROMPT_S)
        dead = dlq.msgs[0]
        assert dead.headers[subjects.H_ERROR] == "decode", dead.headers
        assert dead.headers[subjects.H_SUBJECT] == (case.dlq_subject or subjects.snapshot_for(name_token(case)))
        assert dead.data == b"abc"
        assert metrics.dead_letters.labels("decode")._value.get() == 1
        assert metrics.wire_errors.labels(case.kind)._value.get() == 1
    finally:
        await intake.stop()
        await processor.close(5)
        await worker_nc.close()


def name_token(case: Case) -> str:
    """The last token of a frame's subject (its symbol)."""
    return case.frame.split(b" ", 2)[1].rsplit(b".", 1)[1].decode()


async def test_a_request_with_a_malformed_header_block_is_still_answered(
    nats_url: str, nc: Client, spawn, uid: str
) -> None:
    # Given a worker, and an inbox of ours
    await spawn(nats_url).ready()
    inbox = f"_INBOX.{uid}"
    replies = Collector()
    await nc.subscribe(inbox, cb=replies.cb)
    await nc.flush()
    await nc.flush()
    # When a request whose header block nats-py cannot parse arrives
    async with RawPublisher.connect(nats_url) as raw:
        await raw.send(hpub(b"ml.predict", b"NATS/1.0", GOOD_BODY, inbox.encode()))
    # Then it is answered, without its headers
    await replies.wait(1, timeout=PROMPT_S)
    assert "score" in msgpack.unpackb(replies.msgs[0].data)


@pytest.mark.parametrize("mode", ["core", "jetstream"])
async def test_a_payload_at_the_server_limit_is_dead_lettered_cut_to_fit(
    nats_url: str, nc: Client, spawn, collect, mode: str
) -> None:
    # Given a worker, and the server's limit as the client got it
    worker = await spawn(nats_url, mode=mode, ack_wait_s=2).ready()
    preds, dlq = await collect(subjects.PREDICTION), await collect(subjects.DLQ)
    limit = nc.max_payload
    payload = b"\x93" + b"x" * (limit - 11)  # too large for the worker, 10 bytes short of the server's limit
    # When it is published
    async with RawPublisher.connect(nats_url) as raw:
        await raw.send(pub(subjects.snapshot_for("HUGE").encode(), payload))
    # Then it is dead-lettered, cut so that it and its headers fit, and the cut says the original size
    await dlq.wait(1, timeout=5)
    dead = dlq.msgs[0]
    assert dead.headers[subjects.H_ERROR] == "payload_too_large"
    assert dead.headers[subjects.H_TRUNCATED] == str(len(payload))
    assert payload.startswith(dead.data)
    assert header_block_size(dead.headers) + len(dead.data) <= limit
    # ... the worker keeps its connection and predicts
    await Probe(nc, preds).still_serving("a payload at the server's limit")
    scrape = await worker.scrape()
    assert scrape.total("ml_nats_reconnects_total") == 0
    assert "maximum payload" not in worker.log()
    if mode == "jetstream":
        # ... and the message is terminated, never redelivered (the ack wait is 2 s)
        await asyncio.sleep(2.5)
        assert len(dlq.msgs) == 1
        state = await intake_state(nc.jetstream())  # every consumer: the partitioned intake has one per unit
        assert state.ack_pending == 0 and state.redelivered == 0


async def test_a_prediction_frame_over_the_limit_is_never_written(nc: Client, uid: str) -> None:
    # Given a payload that fits alone but not with its Nats-Msg-Id header block
    limit = nc.max_payload
    body = b"p" * (limit - 8)
    # When it is published as a batch with an id, then it is refused before a byte is written
    with pytest.raises(MaxPayloadError):
        await batchpub.publish_batch(nc, f"t.{uid}", [body], ["an-id"])
    # ... and the connection is unharmed
    await nc.flush()
    assert nc.is_connected


async def test_a_connection_closed_for_good_fails_liveness_and_ends_the_worker(
    worker_factory, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a running worker
    app = await worker_factory()
    health = f"http://127.0.0.1:{app.sidecar.port}/healthz"
    assert await asyncio.to_thread(http_status, health) == 200
    # When its connection is closed for good (as nats-py does after a server's -ERR)
    with caplog.at_level(logging.ERROR, logger="spark_ml.worker.app"):
        await app.nc.close()
        # Then liveness fails at once, and the worker stops with a non-zero exit code and one clear line
        assert await asyncio.to_thread(http_status, health) == 503
        await asyncio.wait_for(app.stop_event.wait(), 3)
    assert app.exit_code == 1
    assert not app.ready()
    lines = [r.getMessage() for r in caplog.records if "nats connection lost for good" in r.getMessage()]
    assert len(lines) == 1 and "closed" in lines[0], lines


async def test_a_stopped_reader_fails_liveness_and_readiness(worker_factory) -> None:
    # Given a running worker whose read loop ends while the connection stays up (what a raise inside the
    # protocol parser used to do)
    app = await worker_factory()
    app.nc._reading_task.cancel()
    await asyncio.sleep(0)
    # Then it is neither ready nor alive, and it stops to be restarted
    base = f"http://127.0.0.1:{app.sidecar.port}"
    assert await asyncio.to_thread(http_status, f"{base}/readyz") == 503
    assert await asyncio.to_thread(http_status, f"{base}/healthz") == 503
    await asyncio.wait_for(app.stop_event.wait(), 3)
    assert app.exit_code == 1

"""The intake contract: the same tests on the in-memory intake (no server) and on a real nats-server in core
and JetStream mode.

Each test gets a :class:`Rig`: snapshots go in, predictions, dead letters and (where the source settles its
messages: memory at-least-once, JetStream) each input's first settlement come out. On the server, the
settlements are read off the wire: a client subscribed to ``$JS.ACK.>`` sees the worker's acks.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgpack
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from spark_ml.core import subjects
from spark_ml.core.contracts import Prediction
from spark_ml.worker.app import WorkerApp
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsio.jswire import NAK, TERM, stream_seq
from tests.support.lifecycle import until
from tests.support.messages import SEED, Collector, decode_any

from .conftest import MemoryPipeline

BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("not msgpack or json", b"\xc1\xc1garbage", "decode"),
    ("broken json", b'{"ts": 1, "mid":', "decode"),
    ("empty", b"", "decode"),
    ("a list, not a map", msgpack.packb([1, 2, 3]), "schema"),
    ("missing ts", msgpack.packb({"mid": 1.0}), "schema"),
    ("missing mid", msgpack.packb({"ts": 1}), "schema"),
    ("string mid", msgpack.packb({"ts": 1, "mid": "45000"}), "schema"),
    ("float ts", msgpack.packb({"ts": 1.5, "mid": 1.0}), "schema"),
    ("bool mid", msgpack.packb({"ts": 1, "mid": True}), "schema"),
    ("NaN mid", msgpack.packb({"ts": 1, "mid": math.nan}), "schema"),
    ("inf spread", msgpack.packb({"ts": 1, "mid": 1.0, "spreadBp": math.inf}), "schema"),
    ("NaN in JSON", b'{"ts": 1, "mid": NaN}', "schema"),
    ("negative price", msgpack.packb({"ts": 1, "mid": -5.0}), "schema"),
    ("zero price", msgpack.packb({"ts": 1, "mid": 0}), "schema"),
    ("negative volume", msgpack.packb({"ts": 1, "mid": 1.0, "vol1m": -1}), "schema"),
    ("rsi over 100", msgpack.packb({"ts": 1, "mid": 1.0, "rsi14": 101}), "schema"),
    ("symbol with space", msgpack.packb({"ts": 1, "mid": 1.0, "symbol": "A B"}), "schema"),
    ("oversized", msgpack.packb({"ts": 1, "mid": 1.0, "pad": "x" * 70_000}), "payload_too_large"),
]


class Out(Protocol):
    """A message that came out: a ``Msg`` on the server, a ``Sent`` in memory."""

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...


class Rig(Protocol):
    settles: bool
    """Whether inputs are settled (acked, terminated, nak'ed): memory at-least-once and JetStream."""
    metrics: Metrics
    app: WorkerApp | None

    async def send(self, data: bytes, subject: str = subjects.SNAPSHOT) -> int | None:
        """Publish one input; its sequence where the source has one."""
        ...

    async def predictions(self, n: int, timeout: float = 10.0) -> Sequence[Out]: ...

    async def dead_letters(self, n: int, timeout: float = 10.0) -> Sequence[Out]: ...

    async def settlements(self, seqs: Sequence[int | None]) -> dict[int, str]:
        """The first settlement (``ack``, ``term``, ``nak``) of each input, once all of them have one."""
        ...


class MemoryRig:
    settles = True
    app: WorkerApp | None = None

    def __init__(self, pipeline: MemoryPipeline) -> None:
        self.p = pipeline
        self.metrics = pipeline.metrics

    async def send(self, data: bytes, subject: str = subjects.SNAPSHOT) -> int | None:
        return (await self.p.intake.put(data, subject)).seq

    async def predictions(self, n: int, timeout: float = 10.0) -> Sequence[Out]:
        await self.p.output.wait(predictions=n, timeout=timeout)
        return self.p.output.predictions

    async def dead_letters(self, n: int, timeout: float = 10.0) -> Sequence[Out]:
        await self.p.output.wait(dead_letters=n, timeout=timeout)
        return self.p.output.dead_letters

    async def settlements(self, seqs: Sequence[int | None]) -> dict[int, str]:
        by_seq = {m.seq: m for m in self.p.intake.delivered}
        await until(lambda: all(by_seq[s].settled for s in seqs if s is not None), 10, "every input settled")
        return {s: by_seq[s].settled[0] for s in seqs if s is not None}


class ServerRig:
    def __init__(self, app: WorkerApp, nc: Client, preds: Collector, dlq: Collector, acks: dict[int, str]) -> None:
        self.app: WorkerApp | None = app
        self.metrics = app.metrics
        self.settles = app.settings.mode == "jetstream"
        self.nc = nc
        self.preds = preds
        self.dlq = dlq
        self.acks = acks

    async def send(self, data: bytes, subject: str = subjects.SNAPSHOT) -> int | None:
        if self.settles:
            return (await self.nc.jetstream().publish(subject, data)).seq
        await self.nc.publish(subject, data)
        return None

    async def predictions(self, n: int, timeout: float = 10.0) -> Sequence[Out]:
        return await self.preds.wait(n, timeout)

    async def dead_letters(self, n: int, timeout: float = 10.0) -> Sequence[Out]:
        return await self.dlq.wait(n, timeout)

    async def settlements(self, seqs: Sequence[int | None]) -> dict[int, str]:
        await until(lambda: all(s in self.acks for s in seqs if s is not None), 10, "every input settled")
        return {s: self.acks[s] for s in seqs if s is not None}


def _settlement(body: bytes) -> str:
    if body.startswith(TERM):
        return "term"
    if body.startswith(NAK):
        return "nak"
    return "ack"


async def _watch_acks(nc: Client) -> dict[int, str]:
    """The first ack, term or nak the server was sent for each stream sequence (acks are plain publishes)."""
    seen: dict[int, str] = {}

    async def on_ack(msg: Msg) -> None:
        seen.setdefault(stream_seq(msg.subject), _settlement(msg.data))

    await nc.subscribe("$JS.ACK.>", cb=on_ack)
    return seen


async def _refusing_predictions_stream(nc: Client) -> None:
    """A stream over ``ml.prediction`` that is full and refuses more: every batch of predictions fails."""
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name="PREDICTIONS",
            subjects=[subjects.PREDICTION],
            storage=StorageType.MEMORY,
            max_msgs=1,
            discard=DiscardPolicy.NEW,
        )
    )
    await js.publish(subjects.PREDICTION, b"filler")


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture(params=["memory", "core", "jetstream"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_rig(mode: str, request: pytest.FixtureRequest) -> MakeRig:
    """``await make_rig(failing_output=False, **settings)``: a started rig of the test's mode."""
    if mode == "memory":
        memory_pipeline = request.getfixturevalue("memory_pipeline")

        async def make_memory(*, failing_output: bool = False, **settings: Any) -> Rig:
            pool = {"shards": settings.get("pool_size", 1), "batch_max": settings.get("batch_max", 256)}
            pipeline = await memory_pipeline(at_least_once=True, **pool)
            if failing_output:
                pipeline.output.failure = ConnectionError("the output refused the batch")
            return MemoryRig(pipeline)

        return make_memory

    worker_factory = request.getfixturevalue("worker_factory")
    collect = request.getfixturevalue("collect")
    nc: Client = request.getfixturevalue("nc")

    async def make_server(*, failing_output: bool = False, **settings: Any) -> Rig:
        if failing_output:
            await _refusing_predictions_stream(nc)
        acks = await _watch_acks(nc)
        preds = await collect(subjects.PREDICTION)  # its flushes also make the server know the ack SUB
        dlq = await collect(subjects.DLQ)
        app = await worker_factory(mode=mode, **settings)
        return ServerRig(app, nc, preds, dlq, acks)

    return make_server


async def test_good_snapshots_become_predictions_in_per_symbol_order(make_rig: MakeRig) -> None:
    # Given a pipeline with several shards and small batches, so many batches interleave
    rig = await make_rig(pool_size=4, batch_max=7)
    symbols = [f"S{i}" for i in range(12)]
    n_per = 150
    # When snapshots of 12 symbols are sent interleaved, as fast as possible
    seqs = []
    for k in range(n_per):
        for sym in symbols:
            seqs.append(await rig.send(msgpack.packb({"ts": 1_000 + k, "mid": 100.0 + k % 7, "symbol": sym})))
    preds = await rig.predictions(n_per * len(symbols), timeout=30)
    # Then each symbol's predictions come out in the order its snapshots went in, none lost, none doubled
    by_symbol: dict[str, list[int]] = {}
    for msg in preds:
        pred = Prediction.model_validate(decode_any(msg.data))
        by_symbol.setdefault(pred.symbol, []).append(pred.ts)
        # And each is a whole prediction of the live model
        assert pred.model_version == "baseline" and pred.signal in ("buy", "sell", "hold")
        assert 0 <= pred.score <= 1 and 0 <= pred.confidence <= 1 and pred.latency_ms >= 0
        assert pred.features["rsi_14"] >= 0
    assert sorted(by_symbol) == sorted(symbols)
    for sym, seq in by_symbol.items():
        assert seq == list(range(1_000, 1_000 + n_per)), sym
    # And where inputs are settled, every one is acked
    if rig.settles:
        assert set((await rig.settlements(seqs)).values()) == {"ack"}


async def test_each_kind_of_bad_input_is_dead_lettered_with_its_reason(make_rig: MakeRig) -> None:
    # Given a pipeline
    rig = await make_rig()
    # When every kind of bad input is sent, each between two good snapshots
    subject = subjects.snapshot_for("BAD")
    ts = SEED["ts"]
    good: list[int | None] = []
    bad: list[int | None] = []
    for i, (_, raw, _) in enumerate(BAD_INPUTS):
        good.append(await rig.send(msgpack.packb({**SEED, "ts": ts + 2 * i}), subject))
        bad.append(await rig.send(raw, subject))
    good.append(await rig.send(msgpack.packb({**SEED, "ts": ts + 10_000}), subject))
    # Then every good one is predicted and every bad one is dead-lettered unchanged with its reason
    await rig.predictions(len(BAD_INPUTS) + 1)
    dead = await rig.dead_letters(len(BAD_INPUTS))
    assert [m.data for m in dead] == [raw for _, raw, _ in BAD_INPUTS]
    for msg, (name, _, reason), seq in zip(dead, BAD_INPUTS, bad, strict=True):
        assert msg.headers is not None, name
        assert msg.headers[subjects.H_ERROR] == reason, name
        assert msg.headers[subjects.H_ERROR_MESSAGE], name
        assert msg.headers[subjects.H_SUBJECT] == subject, name
        assert msg.headers.get(subjects.H_STREAM_SEQ) == (None if seq is None else str(seq)), name
    # And the worker is still running and counted them
    if rig.app is not None:
        assert rig.app.ready()
    assert rig.metrics.model_errors.labels("invalid_input")._value.get() == len(BAD_INPUTS)
    # And where inputs are settled, the bad ones are terminated (never redelivered) and the good ones acked
    if rig.settles:
        settled = await rig.settlements(good + bad)
        assert {settled[s] for s in good if s is not None} == {"ack"}
        assert {settled[s] for s in bad if s is not None} == {"term"}


@pytest.mark.parametrize("mode", ["memory", "jetstream"])  # core mode is at-most-once: nothing to nak
async def test_a_publish_failure_naks_the_inputs_and_bad_input_is_still_terminated(make_rig: MakeRig) -> None:
    # Given a pipeline whose output refuses every batch of predictions
    rig = await make_rig(failing_output=True, ack_wait_s=5.0, max_deliver=10)
    # When good snapshots and a poison one are sent
    good = [await rig.send(msgpack.packb({"ts": i, "mid": 10.0}), subjects.snapshot_for(f"F{i}")) for i in range(3)]
    poison = await rig.send(b"\xc1 poison")
    # Then the good ones are nak'ed (redelivered later, not acked), and the poison one dead-lettered and terminated
    settled = await rig.settlements([*good, poison])
    assert [settled[s] for s in good if s is not None] == ["nak"] * 3
    assert poison is not None and settled[poison] == "term"
    dead = await rig.dead_letters(1)
    assert dead[0].data == b"\xc1 poison"
    assert rig.metrics.model_errors.labels("publish_error")._value.get() >= 1

"""Hostile input, property-based, through a real worker over a real nats-server.

Each hypothesis example publishes a whole generated batch (arbitrary bytes, wrong types, NaN and infinities
in msgpack and as JSON ``NaN`` literals, payloads around the 64 KiB limit, nesting up to 10k deep, valid
snapshots with out-of-order and duplicate timestamps, all interleaved) and then checks, per input:
exactly one outcome (a prediction, or a dead letter carrying the raw payload unchanged and a reason), the
outcome an oracle built on the pydantic contract expects, and only finite numbers on ``ml.prediction``.
One worker serves every example of a test, so it must also survive all of them; at the end its counters
must reconcile with what was observed. ``ml.predict`` gets the same treatment: every hostile request an
error reply with ``Nats-Service-Error-Code`` (400, or 413 when oversized), never a timeout.

test_stream.py and tests/core/test_codec.py hold the hand-picked cases and the codec-level properties;
this file adds the transport-level ones.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections import Counter as Multiset
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.micro.request import ERROR_CODE_HEADER
from pydantic import ValidationError

from spark_ml.core import subjects
from spark_ml.core.contracts import MarketSnapshot, Prediction
from tests.support.messages import SEED, Collector, decode_any

LIMIT = 64 * 1024
TS0 = 1_700_000_000_000
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- what goes in ------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One published payload and the outcome the oracle expects.

    ``expect``: ``pred`` (a prediction), ``dlq`` (a dead letter with a reason in ``reasons``), or ``either``
    (valid by the contract but extreme: a prediction, or a dead letter for non-finite features).
    """

    raw: bytes
    kind: str
    expect: str = "dlq"
    reasons: tuple[str, ...] = ()
    symbol: str | None = None
    subject: str = ""


def _encode(d: Any, encoding: str) -> bytes:
    if encoding == "json":
        return json.dumps(d).encode()  # NaN and Infinity become JSON literals, as a careless sender writes them
    return msgpack.packb(d)


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=max_size)  # msgpack needs valid UTF-8


ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    ints,
    st.booleans(),
    st.none(),
    _text(4),
    st.lists(ints, max_size=2),
)
wrong_types = st.fixed_dictionaries(
    {},
    optional={
        "ts": st.one_of(ints, st.floats(), _text(3)),
        "mid": numbers,
        "spreadBp": numbers,
        "vol1m": numbers,
        "rsi14": numbers,
        "bid": numbers,
        "volume": numbers,
        "extra": st.dictionaries(_text(3), ints, max_size=2),
    },
)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
sane = st.fixed_dictionaries(
    {
        "mid": st.floats(min_value=0.5, max_value=1e5),
        "spreadBp": st.floats(min_value=0, max_value=50),
        "vol1m": st.floats(min_value=0, max_value=1e9),
    },
    optional={"rsi14": st.floats(min_value=0, max_value=100)},
)

# A batch item, before the example number makes its subject and symbol unique.
Draft = tuple[str, Any, str]  # (kind, data, encoding)
drafts = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=300), st.just("-")),
    st.tuples(st.just("wrong"), wrong_types, st.sampled_from(["msgpack", "json"])),
    st.tuples(
        st.just("nonfinite"),
        st.tuples(sane, st.sampled_from(["mid", "spreadBp", "vol1m", "rsi14", "bid"]), non_finite),
        st.sampled_from(["msgpack", "json"]),
    ),
    # Valid snapshots on three symbols with timestamps from a narrow range: out of order and duplicates abound.
    st.tuples(
        st.just("good"),
        st.tuples(st.integers(0, 2), st.integers(0, 30), sane),
        st.sampled_from(["msgpack", "json"]),
    ),
)


def _contract_symbol(raw: bytes, token: str) -> str | None:
    """The symbol a payload resolves to when the contract accepts it (decoded as the worker decodes), else None."""
    try:
        data = json.loads(raw) if raw[:1] == b"{" else msgpack.unpackb(raw, raw=False, strict_map_key=False)
        snap = MarketSnapshot.model_validate(data)
    except (ValueError, TypeError, ValidationError, msgpack.UnpackException, RecursionError):
        return None
    return snap.symbol or token


def build_batch(example: int, batch: list[Draft]) -> list[Item]:
    """Subjects and symbols unique to the example, and the oracle's verdict for each payload."""
    items: list[Item] = []
    last_ts: dict[str, int] = {}
    for i, (kind, data, encoding) in enumerate(batch):
        token = f"E{example}-I{i}"
        subject = subjects.snapshot_for(token)
        if kind == "good":
            sym_no, dts, values = data
            symbol = f"E{example}-S{sym_no}"
            ts = TS0 + dts
            raw = _encode({"ts": ts, "symbol": symbol, **values}, encoding)
            in_order = ts >= last_ts.get(symbol, -1)
            if in_order:
                last_ts[symbol] = ts
            items.append(Item(raw, kind, "pred" if in_order else "dlq", ("out_of_order",), symbol, subject))
            continue
        if kind == "nonfinite":
            values, field, bad = data
            raw = _encode({"ts": TS0, **values, field: bad}, encoding)
            items.append(Item(raw, kind, "dlq", ("schema",), token, subject))
            continue
        raw = data if kind == "bytes" else _encode(data, encoding)
        resolved = _contract_symbol(raw, token)
        if resolved is not None:  # the contract accepts it: a fresh symbol, so never out of order
            items.append(Item(raw, kind, "either", ("non_finite_features",), resolved, subject))
        else:
            items.append(Item(raw, kind, "dlq", ("decode", "schema"), token, subject))
    return items


# --- what comes out ----------------------------------------------------------------------------------------


def assert_finite_prediction(body: Any) -> Prediction:
    pred = Prediction.model_validate(body)
    numbers = [pred.score, pred.confidence, pred.latency_ms, *pred.features.values()]
    assert all(math.isfinite(x) for x in numbers), body
    assert 0.0 <= pred.score <= 1.0 and 0.0 <= pred.confidence <= 1.0
    return pred


class Ledger:
    """Everything observed on ``ml.prediction`` and ``ml.dlq.snapshot`` over one test's examples, by example
    (the ``E<k>-`` prefix of symbols and subjects), decoded once."""

    def __init__(self, preds: Collector, dlq: Collector) -> None:
        self.preds, self.dlq = preds, dlq
        self.expected_preds = self.expected_dead = 0
        self._seen = [0, 0]
        self._by_example: dict[int, tuple[list[Any], list[Any]]] = {}

    @staticmethod
    def _example_of(name: str) -> int | None:
        head, sep, _ = name.partition("-")
        return int(head[1:]) if sep and head[:1] == "E" and head[1:].isdigit() else None

    def of_example(self, example: int) -> tuple[list[Any], list[Any]]:
        """(prediction bodies, dead-letter messages) of one example so far."""
        for i, (collector, is_pred) in enumerate(((self.preds, True), (self.dlq, False))):
            for msg in collector.msgs[self._seen[i] :]:
                if is_pred:
                    item: Any = decode_any(msg.data)
                    item = (item, msg.data[:1] == b"{")  # with its encoding: JSON in, JSON out
                    k = self._example_of(str(item[0].get("symbol", "")))
                else:
                    item = msg
                    subject = (msg.headers or {}).get(subjects.H_SUBJECT, "")
                    k = self._example_of(subject.removeprefix(subjects.SNAPSHOT + "."))
                if k is not None:
                    self._by_example.setdefault(k, ([], []))[0 if is_pred else 1].append(item)
            self._seen[i] = len(collector.msgs)
        return self._by_example.get(example, ([], []))

    async def settle(self, example: int, n: int, timeout: float = 15.0) -> tuple[list[Any], list[Any]]:
        """Wait until the example's ``n`` inputs all have an outcome (never longer than ``timeout``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            preds, dead = self.of_example(example)
            if len(preds) + len(dead) >= n:
                return preds, dead
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"example {example}: {len(preds)} predictions + {len(dead)} dead letters of {n} inputs")
            await asyncio.sleep(0.01)

    async def check(self, nc: Client, example: int, items: list[Item]) -> None:
        for item in items:
            await nc.publish(item.subject, item.raw)
        preds, dead = await self.settle(example, len(items))
        self._reconcile(items, preds, dead)

    def _reconcile(self, items: list[Item], preds: list[tuple[Any, bool]], dead: list[Any]) -> None:
        # Every dead letter: a reason and a message. Every prediction: valid, every number finite.
        for msg in dead:
            assert msg.headers[subjects.H_ERROR] and msg.headers[subjects.H_ERROR_MESSAGE]
        bodies = [body for body, _ in preds]
        for body in bodies:
            assert_finite_prediction(body)
        # Good snapshots: each symbol's accepted timestamps predicted in order, each in the encoding of its
        # snapshot; the late ones dead-lettered.
        good = [it for it in items if it.kind == "good"]
        for symbol in {it.symbol for it in good}:
            want = [(ts_of(it.raw), it.raw[:1] == b"{") for it in good if it.symbol == symbol and it.expect == "pred"]
            assert [(b["ts"], is_json) for b, is_json in preds if b["symbol"] == symbol] == want, symbol
        late = Multiset(it.raw for it in good if it.expect == "dlq")
        good_subjects = {it.subject for it in good}
        got_late = [m for m in dead if m.headers[subjects.H_SUBJECT] in good_subjects]
        assert Multiset(m.data for m in got_late) == late
        assert all(m.headers[subjects.H_ERROR] == "out_of_order" for m in got_late)
        # Every other input: exactly one outcome, the one the oracle allows, raw payload unchanged.
        for it in items:
            if it.kind == "good":
                continue
            mine = [m for m in dead if m.headers[subjects.H_SUBJECT] == it.subject]
            predicted = [b for b in bodies if b["symbol"] == it.symbol]
            assert len(mine) + len(predicted) == 1, (it.kind, it.raw[:80], len(mine), len(predicted))
            if mine:
                assert it.expect in ("dlq", "either"), (it.kind, it.raw[:80])
                assert mine[0].data == it.raw
                assert mine[0].headers[subjects.H_ERROR] in it.reasons, (mine[0].headers, it.raw[:80])
            else:
                assert it.expect in ("pred", "either"), (it.kind, it.raw[:80])
        self.expected_preds += len(bodies)
        self.expected_dead += len(dead)


def ts_of(raw: bytes) -> int:
    ts: int = decode_any(raw)["ts"]
    return ts


async def assert_survived_and_reconciled(nc: Client, app: Any, ledger: Ledger, inputs: int) -> None:
    """The worker still predicts, nothing arrived beyond what each example accounted for, counters agree."""
    await nc.publish(subjects.snapshot_for("AFTER"), msgpack.packb(SEED))
    await ledger.preds.wait(ledger.expected_preds + 1)
    await asyncio.sleep(0.2)  # a stray late output would show up here
    assert app.ready()
    assert len(ledger.preds.msgs) == ledger.expected_preds + 1
    assert len(ledger.dlq.msgs) == ledger.expected_dead
    assert app.processor.published == ledger.expected_preds + 1
    assert app.processor.dead_lettered == ledger.expected_dead
    assert app.metrics.snapshots_received._value.get() == inputs + 1
    assert app.metrics.model_errors.labels("invalid_input")._value.get() == ledger.expected_dead


async def run_examples(strategy: st.SearchStrategy[Any], check: Callable[[Any], Coroutine[Any, Any, None]]) -> int:
    """Run hypothesis in a thread; each example's ``check`` runs on this event loop (where the worker and the
    client live) and is awaited before the next example starts. Returns the number of examples run."""
    loop = asyncio.get_running_loop()
    runs = [0]

    @EXAMPLES
    @given(strategy)
    def example(value: Any) -> None:
        runs[0] += 1
        asyncio.run_coroutine_threadsafe(check(value), loop).result(timeout=60)

    await asyncio.to_thread(example)
    return runs[0]


# --- the stream --------------------------------------------------------------------------------------------


async def test_stream_outcome_for_every_hostile_input(nc: Client, worker_factory, collect) -> None:
    app = await worker_factory(pool_size=3, batch_max=8)
    ledger = Ledger(await collect(subjects.PREDICTION), await collect(subjects.DLQ))
    counter = {"examples": 0, "inputs": 0}

    async def check(batch: list[Draft]) -> None:
        counter["examples"] += 1
        items = build_batch(counter["examples"], batch)
        counter["inputs"] += len(items)
        await ledger.check(nc, counter["examples"], items)

    assert await run_examples(st.lists(drafts, min_size=10, max_size=60), check) >= 20
    await assert_survived_and_reconciled(nc, app, ledger, counter["inputs"])


def _padded(ts: int, symbol: str, size: int, encoding: str) -> bytes:
    """A valid snapshot padded with an extra field to exactly ``size`` bytes (extra fields are ignored)."""
    base = {"ts": ts, "mid": 100.0, "symbol": symbol, "pad": ""}
    empty = len(_encode(base, encoding))
    n = size - empty
    raw = _encode({**base, "pad": "x" * n}, encoding)
    # msgpack strings grow a longer length prefix at 32 and 256 characters: trim to the exact size.
    while len(raw) > size and n > 0:
        n -= 1
        raw = _encode({**base, "pad": "x" * n}, encoding)
    return raw


def _nested(ts: int, symbol: str, depth: int, encoding: str) -> bytes:
    """A snapshot carrying an extra field nested ``depth`` levels deep (JSON arrays or msgpack fixarrays)."""
    head = _encode({"ts": ts, "mid": 100.0, "symbol": symbol}, encoding)
    if encoding == "json":
        return head[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"
    return bytes([head[0] + 1]) + head[1:] + msgpack.packb("deep") + b"\x91" * depth + b"\xc0"


shapes = st.one_of(
    st.tuples(st.just("size"), st.integers(-4, 4), st.sampled_from(["msgpack", "json"])),
    st.tuples(st.just("size"), st.integers(-3000, 3000), st.sampled_from(["msgpack", "json"])),
    st.tuples(st.just("size"), st.integers(LIMIT, 4 * LIMIT), st.sampled_from(["msgpack", "json"])),
    st.tuples(st.just("depth"), st.integers(1, 10_000), st.sampled_from(["msgpack", "json"])),
    st.tuples(st.just("depth"), st.sampled_from([999, 1000, 1024, 1025, 10_000]), st.sampled_from(["msgpack", "json"])),
)


def json_depth_may_decode(depth: int) -> bool:
    """Whether JSON nested ``depth`` deep may or may not decode, depending on the caller.

    json's C decoder spends the interpreter's recursion budget: the cut-off moves with the caller's stack
    depth and with ``sys.getrecursionlimit()``, which hypothesis raises while it runs (process-wide, so the
    in-process worker sees it too). Shallow nesting always decodes; nesting past the limit never does.
    """
    return 500 <= depth <= sys.getrecursionlimit()


def _shape_item(k: int, i: int, shape: str, n: int, encoding: str) -> Item:
    symbol = f"E{k}-I{i}"
    subject = subjects.snapshot_for(symbol)
    size = LIMIT + n if shape == "size" and abs(n) < LIMIT else n
    raw = _padded(TS0, symbol, size, encoding) if shape == "size" else _nested(TS0, symbol, n, encoding)
    if len(raw) > LIMIT:
        return Item(raw, shape, "dlq", ("payload_too_large",), symbol, subject)
    if shape == "depth" and encoding == "json" and json_depth_may_decode(n):
        return Item(raw, shape, "either", ("decode",), symbol, subject)
    if _contract_symbol(raw, symbol) is None:
        return Item(raw, shape, "dlq", ("decode",), symbol, subject)
    return Item(raw, shape, "pred", (), symbol, subject)


async def test_stream_huge_and_deeply_nested_payloads(nc: Client, worker_factory, collect) -> None:
    app = await worker_factory(pool_size=2)
    ledger = Ledger(await collect(subjects.PREDICTION), await collect(subjects.DLQ))
    counter = {"examples": 0, "inputs": 0}

    async def check(batch: list[tuple[str, int, str]]) -> None:
        counter["examples"] += 1
        k = counter["examples"]
        items = [_shape_item(k, i, *shape) for i, shape in enumerate(batch)]
        counter["inputs"] += len(items)
        await ledger.check(nc, k, items)

    assert await run_examples(st.lists(shapes, min_size=2, max_size=10), check) >= 20
    await assert_survived_and_reconciled(nc, app, ledger, counter["inputs"])


# --- request-reply -----------------------------------------------------------------------------------------

request_drafts = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.just("body"), st.one_of(ints, _text(5), st.lists(ints, max_size=3))),
    st.tuples(st.just("snapshot"), st.one_of(wrong_types, ints, st.none())),
    st.tuples(st.just("nonfinite"), st.tuples(sane, st.sampled_from(["mid", "vol1m", "rsi14"]), non_finite)),
    st.tuples(st.just("model"), st.one_of(ints, st.just(""), st.just("no-such-version"), st.just([1]))),
    st.tuples(st.just("valid"), sane),
    st.tuples(st.just("oversized"), st.integers(1, 4 * LIMIT)),
    st.tuples(st.just("deep"), st.integers(1100, 10_000)),
)


def _request(kind: str, data: Any, encoding: str, symbol: str) -> tuple[bytes, str]:
    """A request body and what it must get: ``pred``, ``either`` (a prediction or a 400), 400 or 413."""
    if kind == "bytes":
        return data, "400"
    if kind == "body":
        return _encode(data, encoding), "400"
    if kind == "snapshot":
        raw = _encode({"snapshot": data}, encoding)
        return raw, "either" if _contract_symbol(_encode(data, encoding), symbol) else "400"
    if kind == "nonfinite":
        values, field, bad = data
        return _encode({"snapshot": {"ts": TS0, "symbol": symbol, **values, field: bad}}, encoding), "400"
    if kind == "model":
        return _encode({"snapshot": {**SEED, "symbol": symbol}, "model": data}, encoding), "400"
    if kind == "valid":
        return _encode({"snapshot": {"ts": TS0, "symbol": symbol, **data}}, encoding), "pred"
    if kind == "oversized":
        return _encode({"snapshot": {**SEED, "symbol": symbol}, "pad": "x" * (LIMIT + data)}, encoding), "413"
    head = _encode({"snapshot": {**SEED, "symbol": symbol}}, "json")[:-1]
    return head + b',"d":' + b"[" * data + b"]" * data + b"}", "either" if json_depth_may_decode(data) else "400"


async def test_predict_answers_every_hostile_request(nc: Client, worker_factory) -> None:
    app = await worker_factory(serve_predict=True)
    counter = [0]

    async def check(batch: list[tuple[tuple[str, Any], str]]) -> None:
        counter[0] += 1
        reqs = [_request(kind, data, enc, f"R{counter[0]}-{i}") for i, ((kind, data), enc) in enumerate(batch)]
        # All at once: a timeout (nats TimeoutError) fails the test, which is the point.
        replies = await asyncio.gather(*(nc.request(subjects.PREDICT, raw, timeout=5) for raw, _ in reqs))
        for (raw, want), reply in zip(reqs, replies, strict=True):
            code = (reply.headers or {}).get(ERROR_CODE_HEADER)
            body = decode_any(reply.data)
            if code is None:
                assert want in ("pred", "either"), (raw[:80], body)
                assert_finite_prediction(body)
                continue
            assert want != "pred", (raw[:80], code, body)
            assert code == ("400" if want == "either" else want), (raw[:80], code, body)
            assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]

    strategy = st.lists(st.tuples(request_drafts, st.sampled_from(["msgpack", "json"])), min_size=5, max_size=30)
    assert await run_examples(strategy, check) >= 20
    # Still serving
    assert app.ready()
    reply = await nc.request(subjects.PREDICT, msgpack.packb({"snapshot": SEED}), timeout=5)
    assert_finite_prediction(msgpack.unpackb(reply.data))


# --- symbols from the subject ------------------------------------------------------------------------------


async def test_a_hostile_subject_token_is_a_schema_dead_letter_not_a_symbol(
    nc: Client, worker_factory, collect
) -> None:
    # Given a worker, and snapshots without a symbol on subjects whose last token breaks the symbol rule
    app = await worker_factory()
    preds, dlq = await collect(subjects.PREDICTION), await collect(subjects.DLQ)
    hostile = [subjects.snapshot_for("CTRL\x07BEL"), subjects.snapshot_for("L" * 300)]
    raw = msgpack.packb({"ts": TS0, "mid": 100.0})
    # When they are published, then a good one
    for subject in hostile:
        await nc.publish(subject, raw)
    await nc.publish(subjects.snapshot_for("GOOD"), raw)
    # Then each hostile one is dead-lettered (schema, raw payload unchanged, counted) and only the good one predicted
    await dlq.wait(2)
    await preds.wait(1)
    await asyncio.sleep(0.2)
    assert len(dlq.msgs) == 2  # (Spark-Ml-Subject carries the subject made safe for a header, so not compared)
    assert all(m.headers[subjects.H_ERROR] == "schema" and m.data == raw for m in dlq.msgs)
    assert [b["symbol"] for b in preds.bodies()] == ["GOOD"]
    assert app.metrics.model_errors.labels("invalid_input")._value.get() == 2

"""The client against two partitioned workers: ``predict`` reaches the owner of each symbol's partition (directly or
through ``ml.predict``) and answers from the same state as the stream, whichever worker owns the symbol."""

from __future__ import annotations

import asyncio

import pytest

from spark_ml.client import MarketSnapshot, Prediction, connect
from spark_ml.core.partition import partition_of, units
from spark_ml.worker.app import WorkerApp
from tests.support.lifecycle import until

P = 16
FAST = {"partitions": P, "member_ttl_s": 1.5, "checkpoint_s": 0.2, "serve_predict": True}
T0 = 1696723200000


def _owner(apps: list[WorkerApp], symbol: str) -> int:
    part = partition_of(symbol, P)
    [index] = [i for i, app in enumerate(apps) if part in app.owned.current]
    return index


async def test_predict_on_two_workers_agrees_with_the_stream(nats_url, worker_factory, uid) -> None:
    # Given two workers that share the partitions
    apps = [await worker_factory(**FAST), await worker_factory(**FAST)]

    def balanced() -> bool:
        owned = [app.owned.current for app in apps]
        return frozenset().union(*owned) == frozenset(range(units(P))) and all(owned)

    await until(balanced, 15, "units spread over both workers")
    # And symbols owned by each of them
    symbols: dict[int, list[str]] = {0: [], 1: []}
    i = 0
    while min(len(v) for v in symbols.values()) < 2:
        symbol = f"S{uid}{i}"
        symbols[_owner(apps, symbol)].append(symbol)
        i += 1
    chosen = symbols[0][:2] + symbols[1][:2]
    async with connect(nats_url, partitions=P) as ml:
        # When each symbol's history is streamed through the client
        async with ml.predictions() as stream:
            for n in range(40):
                await ml.publish_many(
                    MarketSnapshot(ts=T0 + n * 60_000, mid=100.0 + k + (n * 7919 % 13) * 0.1, symbol=s)
                    for k, s in enumerate(chosen)
                )
            seen = await asyncio.wait_for(_take(stream, 40 * len(chosen)), 30)
        assert {p.symbol for p in seen} == set(chosen)
        nxt = {s: MarketSnapshot(ts=T0 + 40 * 60_000, mid=101.0 + k, symbol=s) for k, s in enumerate(chosen)}
        # And the next snapshot of each is asked directly, through ml.predict (several times: any worker takes it)
        direct = {s: await ml.predict(snap) for s, snap in nxt.items()}
        relayed = {s: [await ml.predict(snap, direct=False) for _ in range(6)] for s, snap in nxt.items()}
        async with ml.predictions() as stream:
            await ml.publish_many(nxt.values())
            streamed = {p.symbol: p for p in await asyncio.wait_for(_take(stream, len(chosen)), 10)}
    # Then every answer carries the features the stream computes from the owner's state (the score equal to the
    # last bits only: the stream scored two rows in one model call, a request one)
    for s in chosen:
        assert direct[s].features == streamed[s].features, s
        assert direct[s].score == pytest.approx(streamed[s].score, rel=1e-12, abs=1e-15), s
        assert all(r.features == streamed[s].features for r in relayed[s]), s


async def _take(stream, n: int) -> list[Prediction]:
    out: list[Prediction] = []
    async for p in stream:
        out.append(p)
        if len(out) == n:
            break
    return out

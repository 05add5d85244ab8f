"""Analytics state in KV, in-process: a restart keeps the figures, a standby takes over with nothing lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.trading.live_figures import symbol_figures
from spark_ml.worker.services.analytics import AnalyticsService, Phase
from spark_ml.worker.services.analytics_store import STATE_BUCKET, AnalyticsStore, Checkpoint, symbol_key
from tests.support.analytics import feed
from tests.support.lifecycle import until

pytestmark = pytest.mark.usefixtures("nats_server")


@pytest.fixture
async def make(nc: Client) -> AsyncIterator[Callable[..., Awaitable[AnalyticsService]]]:
    made: list[AnalyticsService] = []

    async def start(holder: str, **kwargs: Any) -> AnalyticsService:
        store = AnalyticsStore(nc, holder=holder, ttl_s=3.0)
        svc = AnalyticsService(nc, store=store, checkpoint_s=0.2, **kwargs)
        await svc.start()
        made.append(svc)
        return svc

    yield start
    for svc in made:
        await svc.stop()


async def get(nc: Client, symbol: str | None) -> dict[str, Any]:
    body = json.dumps({"symbol": symbol} if symbol else {}).encode()
    reply = await nc.request(subjects.ANALYTICS_GET, body, timeout=5)
    out: dict[str, Any] = json.loads(reply.data)
    out.pop("servedAt", None)
    return out


async def test_a_restart_answers_the_same_figures_and_continues(nc: Client, make, uid: str) -> None:
    # Given an instance fed 80 bars of two symbols, and its answers
    syms = [f"R{i}{uid}" for i in range(2)]
    first = await make("first")
    assert first.phase is Phase.ACTIVE
    refs = await feed(nc, syms, 80, seed=1)
    await until(lambda: first.snapshots == 160 and first.predictions == 160, 10, "every message handled")
    before = {s: await get(nc, s) for s in [*syms, None]}
    # When it stops and a new instance starts
    await first.stop()
    second = await make("second")
    # Then the new one answers the same figures, to the last bit
    assert second.phase is Phase.ACTIVE
    assert {s: await get(nc, s) for s in [*syms, None]} == before
    # And new snapshots continue from there: the figures of one uninterrupted position
    await feed(nc, syms, 20, seed=2, start=80, refs=refs)
    await until(lambda: second.snapshots == 40 and second.predictions == 40, 10, "the new messages handled")
    for s in syms:
        after = await get(nc, s)
        expected = symbol_figures(s, refs[s])
        assert after["updates"] == 100 and {k: after[k] for k in expected} == pytest.approx(expected)


async def test_a_standby_takes_over_at_a_stop_and_replays_what_came_meanwhile(nc: Client, make, uid: str) -> None:
    # Given an active instance and a standby, fed 60 bars of two symbols
    syms = [f"H{i}{uid}" for i in range(2)]
    active = await make("a")
    standby = await make("b")
    assert (active.phase, standby.phase) == (Phase.ACTIVE, Phase.STANDBY)
    refs = await feed(nc, syms, 60, seed=4)
    await until(lambda: active.snapshots == 120 and active.predictions == 120, 10, "every message handled")
    # When the active one stops and 40 more bars are published at once, during the hand-over
    await active.stop()
    await feed(nc, syms, 40, seed=5, start=60, refs=refs)
    # (takeovers counts a take-over once the instance serves: phase ACTIVE comes just before its endpoints do)
    await until(lambda: standby.takeovers == 1, 10, "the standby took over")
    await until(
        lambda: all((pp := standby.position(s)) is not None and pp.updates == 100 for s in syms), 10, "all replayed"
    )
    # Then it answers what one instance fed every message would
    for s in syms:
        body = await get(nc, s)
        expected = symbol_figures(s, refs[s])
        assert {k: body[k] for k in expected} == pytest.approx(expected)


async def test_both_stop_promptly_when_the_standby_is_stopped_during_its_take_over(nc: Client, make, uid: str) -> None:
    # Given an active instance with state and a standby
    syms = [f"T{i}{uid}" for i in range(4)]
    active = await make("a")
    standby = await make("b")
    assert (active.phase, standby.phase) == (Phase.ACTIVE, Phase.STANDBY)
    await feed(nc, syms, 100, seed=6)
    await until(lambda: active.snapshots == 400, 10, "every snapshot handled")
    # When the active one stops (releasing the lease) and the standby is stopped at once, mid take-over
    await active.stop()
    await asyncio.sleep(0)
    # Then the standby's stop returns (it hung when its campaign task swallowed the cancel)
    t0 = time.monotonic()
    await asyncio.wait_for(standby.stop(), 10)
    took = time.monotonic() - t0
    print(f"\nRESULT standby stop during take-over: {took:.2f}s")
    assert took < 5 and not standby._tasks


class _DiesMidCheckpoint(AnalyticsStore):
    """After its first checkpoint, this holder "dies" inside every save: it writes the symbols' records, never the
    commit, as when SIGKILL comes between two KV writes."""

    commits = 0

    async def save(self, checkpoint: Checkpoint, dropped: set[str]) -> bool:
        if not self.commits:
            self.commits += 1
            return await super().save(checkpoint, dropped)
        kv = self._bucket()
        for symbol, (slot, value) in checkpoint.records.items():
            await kv.put(symbol_key(symbol, slot), value)
        raise ConnectionError("killed between two writes")


async def test_a_checkpoint_cut_short_between_its_writes_is_not_taken_at_all(nc: Client, make, uid: str) -> None:
    # Given an active instance that committed a checkpoint after 50 bars of three symbols, and its answers then
    syms = [f"K{i}{uid}" for i in range(3)]
    store = _DiesMidCheckpoint(nc, holder="dies", ttl_s=3.0)
    torn = AnalyticsService(nc, store=store, checkpoint_s=3600)
    await torn.start()
    try:
        await feed(nc, syms, 50, seed=7)
        await until(lambda: torn.predictions == 150, 10, "every message handled")
        await torn._checkpoint()
        committed = {s: await get(nc, s) for s in [*syms, None]}
        # When 30 more bars (and a new symbol) come and its next checkpoints write every record but the commit
        late = f"L{uid}"
        await feed(nc, [*syms, late], 30, seed=8, start=50)
        await until(lambda: torn.predictions == 270, 10, "the new messages handled")
        with pytest.raises(ConnectionError):
            await torn._checkpoint()
        assert await get(nc, syms[0]) != committed[syms[0]]
    finally:
        await torn.stop()  # its last checkpoint is cut short too (logged); the lease is released
    # Then the instance that takes over answers the committed checkpoint, symbols and book as of one moment
    second = await make("second")
    assert second.phase is Phase.ACTIVE
    assert {s: await get(nc, s) for s in [*syms, None]} == committed
    assert second.position(late) is None
    # And the records no commit names (the new symbol's) were swept at the take-over
    kv = await nc.jetstream().key_value(STATE_BUCKET)
    for slot in (0, 1):
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get(symbol_key(late, slot))

"""Leases and checkpoints on a real server: one holder at a time, expiry frees, fencing, stale writers refused."""

from __future__ import annotations

import asyncio
import time

import pytest

from spark_ml.core.errors import OwnershipLost, TransportError
from spark_ml.worker.cluster import CheckpointStore
from spark_ml.worker.cluster.leases import LeaseKeeper, unit_lease
from tests.support.connections import connected

TTL = 1.5


async def test_a_lease_cannot_be_held_by_two(nats_url: str) -> None:
    async with connected(nats_url) as n1, connected(nats_url) as n2:
        async with LeaseKeeper(n1, holder="a", ttl_s=TTL) as a, LeaseKeeper(n2, holder="b", ttl_s=TTL) as b:
            results = await asyncio.gather(*(k.acquire(unit_lease(3)) for k in (a, b)))
            assert sorted(results) == [False, True]
            owner, other = (a, b) if results[0] else (b, a)
            assert owner.prior[unit_lease(3)] == "none"
            # Renewals keep it across several TTLs.
            await asyncio.sleep(TTL * 2)
            assert owner.holds(unit_lease(3)) and not await other.acquire(unit_lease(3))
            assert await other.holder_of(unit_lease(3)) == owner.holder
            # A release frees it at once, and the watcher says so.
            waiting = asyncio.create_task(other.wait_freed(2.0))
            await asyncio.sleep(0.05)
            await owner.release(unit_lease(3))
            assert await waiting
            assert await other.acquire(unit_lease(3))
            assert not owner.holds(unit_lease(3))
            assert other.prior[unit_lease(3)] == "released", "a released lease says its checkpoint is current"


async def test_an_expired_lease_is_free_and_its_holder_fenced_first(nats_url: str) -> None:
    lost: list[tuple[str, float]] = []
    async with connected(nats_url) as n1, connected(nats_url) as n2:

        async def on_lost(key: str) -> None:
            lost.append((key, time.monotonic()))

        a = LeaseKeeper(n1, holder="a", ttl_s=TTL, on_lost=on_lost)
        async with a, LeaseKeeper(n2, holder="b", ttl_s=TTL) as b:
            assert await a.acquire(unit_lease(1))
            # a stalls: no more renewals (as a process stopped in a debugger or starved of CPU).
            a._tasks[0].cancel()
            stalled = time.monotonic()
            while not await b.acquire(unit_lease(1)):
                assert time.monotonic() - stalled < TTL + 2.0
                await b.wait_freed(0.2)
            taken = time.monotonic()
            assert lost and lost[0][0] == unit_lease(1)
            assert lost[0][1] < taken, "the stalled holder fenced itself before the other could take over"
            assert not a.holds(unit_lease(1)) and a.lost == 1
            assert b.prior[unit_lease(1)] == "expired"


async def test_a_stale_checkpoint_writer_gets_ownership_lost(nats_url: str) -> None:
    async with connected(nats_url) as n1, connected(nats_url) as n2:
        old, new = CheckpointStore(n1), CheckpointStore(n2)
        assert await old.load(5) is None
        rev = await old.save(5, b"state-1", revision=0)
        assert await new.load(5) == (b"state-1", rev)
        data, claimed = await new.claim(5)
        assert data == b"state-1" and claimed > rev
        with pytest.raises(OwnershipLost) as err:
            await old.save(5, b"state-2", revision=rev)
        assert isinstance(err.value, TransportError) and err.value.unit == 5
        rev2 = await new.save(5, b"state-3", revision=claimed)
        assert await old.load(5) == (b"state-3", rev2)
        # Two first writers: only one creates the checkpoint.
        results = await asyncio.gather(
            old.save(6, b"x", revision=0), new.save(6, b"y", revision=0), return_exceptions=True
        )
        assert sum(isinstance(r, OwnershipLost) for r in results) == 1
        # Claiming a unit that never had a checkpoint fences a late first writer too.
        _, claimed7 = await new.claim(7)
        with pytest.raises(OwnershipLost):
            await old.save(7, b"late", revision=0)
        assert await new.load(7) is None and claimed7 > 0

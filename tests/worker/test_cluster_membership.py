"""Membership on a real server: balanced assignment, graceful leave and death move units, debounced changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from nats.aio.client import Client

from spark_ml.core.partition import assign, units
from spark_ml.worker.cluster import Membership
from tests.support.connections import connected

UNITS = units(16)
TTL = 1.5


async def _until(cond: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def _member(
    url: str, worker_id: str, seen: dict[str, frozenset[int]]
) -> AsyncIterator[tuple[Membership, Client]]:
    async with connected(url) as nc:

        async def on_change(assigned: frozenset[int]) -> None:
            seen[worker_id] = assigned

        m = Membership(nc, worker_id=worker_id, units=UNITS, ttl_s=TTL, on_change=on_change, debounce_s=0.05)
        await m.start()
        try:
            yield m, nc
        finally:
            await m.stop()


def _balanced(seen: dict[str, frozenset[int]], ids: list[str], among: list[str] | None = None) -> bool:
    """Whether each of ``ids`` was last told its share of the assignment over ``among`` (default: ``ids``)."""
    want = {m: frozenset(us) for m, us in assign(among or ids, UNITS).items()}
    return all(seen.get(i) == want[i] for i in ids)


async def test_three_members_share_the_units_evenly(nats_url: str) -> None:
    seen: dict[str, frozenset[int]] = {}
    async with _member(nats_url, "a", seen), _member(nats_url, "b", seen), _member(nats_url, "c", seen):
        await _until(lambda: _balanced(seen, ["a", "b", "c"]), 3.0)
        sizes = sorted(len(seen[i]) for i in "abc")
        assert sizes[-1] - sizes[0] <= 1 and sum(sizes) == UNITS
        assert frozenset().union(*seen.values()) == frozenset(range(UNITS))


async def test_a_member_that_stops_hands_its_units_over_within_a_second(nats_url: str) -> None:
    seen: dict[str, frozenset[int]] = {}
    async with _member(nats_url, "a", seen), _member(nats_url, "b", seen):
        async with _member(nats_url, "c", seen):
            await _until(lambda: _balanced(seen, ["a", "b", "c"]), 3.0)
        took = await _until(lambda: _balanced(seen, ["a", "b"]), 1.0)
        assert took < 1.0


async def test_a_member_that_dies_is_dropped_after_its_ttl(nats_url: str) -> None:
    seen: dict[str, frozenset[int]] = {}
    async with _member(nats_url, "a", seen), _member(nats_url, "b", seen):
        async with connected(nats_url) as nc:
            dying = Membership(nc, worker_id="c", units=UNITS, ttl_s=TTL, debounce_s=0.05)
            await dying.start()
            await _until(lambda: _balanced(seen, ["a", "b"], ["a", "b", "c"]), 3.0)
            # Death: the tasks stop and the key is left behind, as when a process is killed.
            for task in dying._tasks:
                task.cancel()
            killed = time.monotonic()
        await _until(lambda: _balanced(seen, ["a", "b"]), TTL + 2.0)
        assert time.monotonic() - killed < TTL + 1.5


async def test_a_quick_join_and_leave_does_not_flap(nats_url: str) -> None:
    seen: dict[str, frozenset[int]] = {}
    async with connected(nats_url) as nc:
        changes: list[frozenset[int]] = []

        async def on_change(assigned: frozenset[int]) -> None:
            changes.append(assigned)

        m = Membership(nc, worker_id="a", units=UNITS, ttl_s=TTL, on_change=on_change, debounce_s=0.3)
        async with m:
            assert changes == [frozenset(range(UNITS))]
            async with _member(nats_url, "b", seen):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.6)
            assert changes == [frozenset(range(UNITS))]
            assert m.members == {"a"}

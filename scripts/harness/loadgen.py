"""Round-trip timers for the benchmark: request-reply over NATS and over the HTTP bridge.

Each keeps ``in_flight`` requests outstanding (1: one sequential caller) until ``n`` have completed and
returns every round-trip time in seconds, in completion order; p50/p99 and throughput
(``n / wall time``) follow. A refusal or error reply raises, so a benchmark never times failures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from nats.aio.client import Client
from nats.micro.request import ERROR_CODE_HEADER

from spark_ml.core.subjects import PREDICT

__all__ = ["http_round_trips", "nats_round_trips"]


async def _run(one: Callable[[], Awaitable[None]], n: int, in_flight: int) -> list[float]:
    if n < 1 or in_flight < 1:
        raise ValueError("n and in_flight must be >= 1")
    times: list[float] = []
    remaining = n

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await one()
            times.append(time.perf_counter() - start)

    await asyncio.gather(*(caller() for _ in range(min(in_flight, n))))
    return times


async def nats_round_trips(
    nc: Client, body: bytes, *, n: int, in_flight: int = 1, subject: str = PREDICT, timeout: float = 5.0
) -> list[float]:
    """Time ``n`` requests of ``body`` on ``subject`` (``ml.predict``); raises on an error reply."""

    async def one() -> None:
        msg = await nc.request(subject, body, timeout=timeout)
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            raise RuntimeError(f"error reply {msg.headers[ERROR_CODE_HEADER]}: {msg.data[:200]!r}")

    return await _run(one, n, in_flight)


async def http_round_trips(
    session: aiohttp.ClientSession, url: str, body: bytes, *, n: int, in_flight: int = 1
) -> list[float]:
    """Time ``n`` POSTs of ``body`` to ``url`` (``.../ml/predict``); raises on any status but 200.

    The gateway's rate limit applies: give it a generous ``rate_limit`` for a benchmark.
    """
    headers = {"Content-Type": "application/json" if body[:1] == b"{" else "application/msgpack"}

    async def one() -> None:
        async with session.post(url, data=body, headers=headers) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")

    return await _run(one, n, in_flight)

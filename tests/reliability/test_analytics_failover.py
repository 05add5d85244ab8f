"""Live analytics in real ``spark-ml analytics`` processes: a restart keeps the figures, and with two processes
the answers are one process's, through a SIGKILL of the active one and a graceful hand-over.

The reference is an in-memory :class:`AnalyticsService` in this test's process (``api=False``: it does not
answer queries) on the same server, so it receives the same messages in the same order as the processes do:
"one process's answers". Snapshots and predictions come from this test's connection (no worker), one symbol's
prediction right after its snapshot, so the order of events is fixed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.partition import DEFAULT_PARTITIONS, server_mappings
from spark_ml.worker.natsserver import NatsServer
from spark_ml.worker.services.analytics import AnalyticsService
from tests.support.connections import connected
from tests.support.lifecycle import until
from tests.support.ports import free_port
from tests.support.processes import SparkMl, service_env
from tests.worker.test_analytics_api import T0, H, feed, snap

SYMBOLS = ["EURUSD", "GBPUSD", "BRK.B"]
TTL_S = 1.5
_TOOK_OVER = re.compile(r"(\d+) symbols from the checkpoint, (\d+) buffered messages, (\d+) replayed")


@pytest.fixture
async def nc(server: NatsServer) -> AsyncIterator[Client]:
    async with connected(server.url, allow_reconnect=False) as client:
        yield client


@pytest.fixture
async def reference(nc: Client) -> AsyncIterator[AnalyticsService]:
    svc = AnalyticsService(nc, api=False)
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
def spawn(server: NatsServer, tmp_path: Path) -> Iterator[Callable[[str], SparkMl]]:
    procs: list[SparkMl] = []

    def start(name: str) -> SparkMl:
        env = {
            "SPARK_ML_NATS_URL": server.url,
            "SPARK_ML_MEMBER_TTL_S": str(TTL_S),
            "SPARK_ML_CHECKPOINT_S": "0.2",
        }
        proc = SparkMl(["analytics"], env, tmp_path / f"{name}.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop(5)


async def answers(nc: Client) -> dict[str | None, Any]:
    """Every symbol's and the portfolio's ``analytics.get`` body, without ``servedAt``."""
    out: dict[str | None, Any] = {}
    for symbol in [*SYMBOLS, None]:
        reply = await nc.request(subjects.ANALYTICS_GET, json.dumps({"symbol": symbol}).encode(), timeout=5)
        body = json.loads(reply.data)
        body.pop("servedAt", None)
        out[symbol] = body
    return out


def expected(ref: AnalyticsService) -> dict[str | None, Any]:
    out: dict[str | None, Any] = {}
    for symbol in [*SYMBOLS, None]:
        body = json.loads(json.dumps(ref.figures(symbol)))
        body.pop("servedAt", None)
        out[symbol] = body
    return out


async def served_updates(nc: Client, n: int, timeout: float = 20.0) -> None:
    """Wait until the active instance answers with ``n`` updates for every symbol."""

    async def done() -> bool:
        try:
            got = await answers(nc)
        except Exception:
            return False
        return all(got[s].get("updates") == n for s in SYMBOLS)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await done():
        assert loop.time() < deadline, f"not every symbol at {n} updates within {timeout}s"
        await asyncio.sleep(0.1)


def active(proc: SparkMl) -> bool:
    return "analytics: active" in proc.output()


async def test_a_restart_mid_replay_keeps_the_figures_and_continues(
    nc: Client, reference: AnalyticsService, spawn
) -> None:
    # Given one analytics process, fed the first 150 bars of three symbols
    first = spawn("first")
    await until(lambda: active(first), 20, "the first process active")
    await feed(nc, SYMBOLS, 150, seed=1)
    await served_updates(nc, 150)
    before = await answers(nc)
    assert before == expected(reference)
    # When it is stopped and started again (nothing is published while no process listens: core NATS)
    assert first.stop(10) == 0
    second = spawn("second")
    await until(lambda: active(second), 20, "the restarted process active")
    # Then it answers the same figures, to the last bit
    assert await answers(nc) == before
    assert "3 symbols from the checkpoint" in second.output()
    # And the rest of the replay continues from there, as one uninterrupted process
    await feed(nc, SYMBOLS, 150, seed=2, start=150)
    await served_updates(nc, 300)
    assert await answers(nc) == expected(reference)


async def test_two_processes_answer_as_one_through_a_kill_and_a_hand_over(
    nc: Client, reference: AnalyticsService, spawn
) -> None:
    # Given two analytics processes: one active, one standing by
    a, b = spawn("a"), spawn("b")
    await until(lambda: active(a) or active(b), 20, "one process active")
    await asyncio.sleep(0.5)
    first, second = (a, b) if active(a) else (b, a)
    assert not active(second)
    # When the active one is SIGKILLed mid-replay while bars keep coming
    replay = asyncio.create_task(feed(nc, SYMBOLS, 400, seed=3, pace_s=0.005))
    await until(lambda: reference.snapshots >= 300, 20, "a quarter of the replay")
    os.killpg(first.child.pid, signal.SIGKILL)
    await replay
    # Then the standby takes over from the checkpoint plus what it buffered, and answers as one process would
    await until(lambda: active(second), 20, "the standby active")
    await served_updates(nc, 400)
    assert await answers(nc) == expected(reference)
    took_over = _TOOK_OVER.search(second.output())
    assert took_over is not None, second.output()[-2000:]
    restored, buffered, replayed = (int(g) for g in took_over.groups())
    # (the checkpoint held part of the buffer; the rest, published after it, was replayed over it)
    assert restored == 3 and buffered > replayed > 0
    # And when a new standby joins and the active one stops, the new one continues alike
    third = spawn("third")
    await asyncio.sleep(1.0)
    assert not active(third)
    assert second.stop(10) == 0
    await until(lambda: active(third), 20, "the new standby active")
    await feed(nc, SYMBOLS, 100, seed=4, start=400)
    await served_updates(nc, 500)
    assert await answers(nc) == expected(reference)


async def test_two_spark_ml_up_processes_run_one_active_analytics_and_both_gateways_answer(tmp_path: Path) -> None:
    # Given two `spark-ml up` processes on one server with the partition mapping (workers splitting the
    # partitions, analytics in both)
    with NatsServer(store_dir=tmp_path / "nats", mappings=server_mappings(DEFAULT_PARTITIONS)) as server:
        async with connected(server.url, allow_reconnect=False) as nc:
            await _two_ups(server, nc, tmp_path)


async def _two_ups(server: NatsServer, nc: Client, tmp_path: Path) -> None:
    procs = []
    ports = []
    for name in ("up-a", "up-b"):
        ports.append(free_port())
        env = service_env(tmp_path / name, {"SPARK_ML_NATS_URL": server.url, "SPARK_ML_HTTP_PORT": str(ports[-1])})
        env["SPARK_ML_MEMBER_TTL_S"] = str(TTL_S)
        procs.append(SparkMl(["up"], env, tmp_path / f"{name}.log"))
    try:
        for proc in procs:
            assert proc.wait_for_output(("Ctrl-C to stop",), 60), proc.output()[-2000:]
        # When snapshots flow through the workers (real predictions from them)
        for k in range(50):
            for sym in SYMBOLS:
                await nc.publish(subjects.snapshot_for(sym), snap(sym, 100.0 + k % 7, T0 + k * H))
        await nc.flush()
        await until(lambda: sum(active(p) for p in procs) == 1, 20, "one analytics instance active")
        # Then exactly one analytics instance is active, and the gateway of either process answers the same
        loop = asyncio.get_running_loop()
        bodies = []
        for port in ports:
            status, body = await loop.run_in_executor(None, _get, f"http://127.0.0.1:{port}/ml/analytics/EURUSD")
            assert status == 200, body
            bodies.append(body)
        assert bodies[0]["updates"] == bodies[1]["updates"] == 50 and bodies[0]["symbol"] == "EURUSD"
        # And when the process with the active instance is stopped, the other's takes over and answers on
        first = next(p for p in procs if active(p))
        other = next(p for p in procs if p is not first)
        assert first.stop(20) == 0
        await until(lambda: active(other), 20, "the other process's analytics active")
        port = ports[procs.index(other)]
        status, body = await loop.run_in_executor(None, _get, f"http://127.0.0.1:{port}/ml/analytics/EURUSD")
        assert status == 200 and body["updates"] == 50, body
    finally:
        for proc in procs:
            proc.stop(20)


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())

"""Fixtures for worker tests: an in-process WorkerApp on the test's event loop, and a collector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from spark_ml.worker.app import WorkerApp
from spark_ml.worker.run import predict_service
from spark_ml.worker.settings import Settings

SEED = {"ts": 1696723200000, "mid": 45000, "spreadBp": 2, "vol1m": 1000000, "rsi14": 55}


@pytest.fixture
def settings_factory(nats_url: str, tmp_path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "nats_url": nats_url,
            "metrics_port": 0,
            "http_port": 0,
            "registry": tmp_path / "registry",
            "registry_poll_s": 0.1,
        }
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture
async def worker_factory(settings_factory) -> AsyncIterator[Callable[..., Awaitable[WorkerApp]]]:
    apps: list[WorkerApp] = []

    async def start(**overrides: Any) -> WorkerApp:
        serve_predict = overrides.pop("serve_predict", False)
        services = [predict_service] if serve_predict else []
        app = WorkerApp(settings_factory(**overrides), handle_signals=False, services=services)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


class Collector:
    """Collects messages of one subject; ``wait(n)`` returns once n have arrived (or fails after a timeout)."""

    def __init__(self) -> None:
        self.msgs: list[Msg] = []
        self._changed = asyncio.Event()

    async def cb(self, msg: Msg) -> None:
        self.msgs.append(msg)
        self._changed.set()

    async def wait(self, n: int, timeout: float = 10.0) -> list[Msg]:
        async def until() -> None:
            while len(self.msgs) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
        return self.msgs

    def bodies(self) -> list[dict[str, Any]]:
        return [decode_any(m.data) for m in self.msgs]


def decode_any(data: bytes) -> Any:
    import json

    return json.loads(data) if data[:1] == b"{" else msgpack.unpackb(data, raw=False)


@pytest.fixture
def collect(nc: Client) -> Callable[[str], Awaitable[Collector]]:
    async def sub(subject: str) -> Collector:
        c = Collector()
        await nc.subscribe(subject, cb=c.cb)
        await nc.flush()
        await nc.flush()  # nats-py 2.16: one flush can overtake a SUB still in the client's buffer
        return c

    return sub

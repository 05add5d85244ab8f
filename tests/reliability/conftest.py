"""Fixtures of the fault tests: servers and clusters these tests own (they stop, restart and kill them),
and `spark-ml worker` child processes that are always killed at teardown.

An external ``SPARK_ML_NATS_URL`` is ignored here on purpose: a fault test needs a server it controls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spark_ml.worker.natsserver import NatsServer
from tests.support.cluster import NatsCluster
from tests.support.processes import SpawnWorker, WorkerProcess, worker_env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """A JetStream nats-server on a free loopback port, its store in the test's directory."""
    with NatsServer(store_dir=tmp_path / "nats") as srv:
        yield srv


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-server nodes routed on loopback, JetStream in each, a metadata leader elected."""
    with NatsCluster(3, base_dir=tmp_path / "cluster", name="spark-ml-test") as c:
        yield c


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[SpawnWorker]:
    procs: list[WorkerProcess] = []

    def spawn(nats_url: str, **settings: object) -> WorkerProcess:
        env = worker_env(nats_url, tmp_path / "registry", **settings)
        proc = WorkerProcess(env, tmp_path / f"worker-{len(procs)}.log").start()
        procs.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in procs:
            proc.kill()

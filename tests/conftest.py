"""Shared fixtures: a real nats-server per test on a free loopback port (or SPARK_ML_NATS_URL), clean env."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings
from nats.aio.client import Client

from spark_ml.core.partition import DEFAULT_PARTITIONS, server_mappings
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import connected

settings.register_profile("ci", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, derandomize=True, database=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

_EXTERNAL_URL = os.environ.get("SPARK_ML_NATS_URL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SPARK_ML_* from the caller's shell leaks into a test (an external NATS URL is kept on purpose)."""
    for key in list(os.environ):
        if key.startswith("SPARK_ML_") and key != "SPARK_ML_NATS_URL":
            monkeypatch.delenv(key)


@pytest.fixture
def nats_server(tmp_path) -> Iterator[NatsServer | None]:
    """A nats-server with JetStream and the partition mapping of the default partitions (as
    deploy/nats/nats.conf) on a free port; None when SPARK_ML_NATS_URL points at one already."""
    if _EXTERNAL_URL:
        yield None
        return
    with NatsServer(store_dir=tmp_path / "nats", mappings=server_mappings(DEFAULT_PARTITIONS)) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServer | None) -> str:
    """The URL of the test's server (or of SPARK_ML_NATS_URL)."""
    return _EXTERNAL_URL or (nats_server.url if nats_server else "")


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    """The test's own connection, no reconnects (a lost server fails the test at once)."""
    async with connected(nats_url, allow_reconnect=False) as client:
        yield client


@pytest.fixture
def uid() -> str:
    """A unique token for subjects and names in one test."""
    return uuid.uuid4().hex[:10]

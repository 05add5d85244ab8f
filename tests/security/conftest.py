"""Fixtures for the security tests: one nats-server per authentication method (for the whole session), and
``spark-ml`` child processes that are always stopped."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.security._procs import SparkMl
from tests.security._servers import Method, start_methods


@pytest.fixture(scope="session")
def methods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Method]]:
    started = start_methods(tmp_path_factory.mktemp("auth"))
    try:
        yield started
    finally:
        for method in started.values():
            method.server.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def service_env(directory: Path, settings: dict[str, str]) -> dict[str, str]:
    """Settings for a ``spark-ml`` child: ``settings`` plus its own metrics port and an empty registry."""
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "SPARK_ML_METRICS_PORT": str(free_port()),
        "SPARK_ML_REGISTRY": str(directory / "registry"),
        "SPARK_ML_BIND_HOST": "127.0.0.1",
        **settings,
    }


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., SparkMl]]:
    """``spawn(args, env, name)``: start ``spark-ml <args>``; every child is stopped at teardown."""
    started: list[SparkMl] = []

    def start(args: list[str], env: dict[str, str], name: str = "proc") -> SparkMl:
        proc = SparkMl(args, env, tmp_path / f"{name}-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()

"""Fixtures for the security tests: one nats-server per authentication method (for the whole session), and
``spark-ml`` child processes that are always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.auth_servers import Method, start_methods
from tests.support.processes import SparkMl


@pytest.fixture(scope="session")
def methods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Method]]:
    started = start_methods(tmp_path_factory.mktemp("auth"))
    try:
        yield started
    finally:
        for method in started.values():
            method.server.cleanup()


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

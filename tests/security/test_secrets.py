"""Secrets that travel in places other than the dedicated settings: user and password inside the NATS URL
(``nats://user:password@host:port``, which nats-py accepts), and in a URL the settings refuse."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spark_ml.core.contracts import Prediction
from tests.support.auth_servers import Method
from tests.support.processes import SparkMl, base_env, predict_end_to_end, service_env, spark_ml


@dataclass(frozen=True)
class UrlRun:
    password: str
    prediction: dict[str, object]
    exit_code: int
    output: str


@pytest.fixture(scope="module")
def url_run(methods: dict[str, Method], tmp_path_factory: pytest.TempPathFactory) -> Iterator[UrlRun]:
    """A worker whose only credential is in ``SPARK_ML_NATS_URL``, run at DEBUG and stopped.

    The auth servers have no JetStream, so the worker runs as the only one (``SPARK_ML_SOLO``)."""
    method = methods["userpass"]
    user, password = method.client["user"], method.client["password"]
    url = method.url.replace("nats://", f"nats://{user}:{password}@")
    d = tmp_path_factory.mktemp("url-creds")
    worker = SparkMl(
        ["worker", "--log-level", "DEBUG"],
        service_env(d, {"SPARK_ML_NATS_URL": url, "SPARK_ML_SOLO": "true"}),
        d / "w.log",
    )
    try:
        got = asyncio.run(predict_end_to_end(method.url, method.client, worker))
    finally:
        code = worker.stop()
    yield UrlRun(password, got["streamed"], code, worker.output())


def test_credentials_in_the_url_authenticate(url_run: UrlRun) -> None:
    Prediction.model_validate(url_run.prediction)
    assert url_run.exit_code == 0
    assert "worker ready" in url_run.output


def test_credentials_in_the_url_are_never_logged(url_run: UrlRun) -> None:
    assert url_run.password not in url_run.output


@pytest.fixture(scope="module")
def refused_url(methods: dict[str, Method]) -> tuple[str, subprocess.CompletedProcess[str]]:
    password = methods["userpass"].client["password"]
    env = {**base_env(), "SPARK_ML_NATS_URL": f"http://spark-worker:{password}@127.0.0.1:4222"}
    done = subprocess.run([spark_ml(), "worker"], env=env, capture_output=True, text=True, timeout=30, check=False)
    return password, done


def test_a_url_the_settings_refuse_is_reported(refused_url: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    _, done = refused_url
    assert done.returncode == 2
    assert "invalid setting nats_url" in done.stderr


def test_a_url_the_settings_refuse_is_reported_without_its_password(
    refused_url: tuple[str, subprocess.CompletedProcess[str]],
) -> None:
    password, done = refused_url
    assert password not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("args", "ready"),
    [
        (["up", "--no-gateway", "--no-analytics", "--metrics-port", "0"], "spark-ml up"),
        (["tail", "--count", "0"], "tailing ml.prediction"),
    ],
    ids=["up", "tail"],
)
def test_user_facing_commands_print_the_url_without_its_password(
    methods: dict[str, Method], tmp_path: Path, args: list[str], ready: str
) -> None:
    # Given a NATS URL that carries the only credential
    method = methods["userpass"]
    user, password = method.client["user"], method.client["password"]
    url = method.url.replace("nats://", f"nats://{user}:{password}@")
    # When a command that prints where it connects starts on it
    proc = SparkMl(
        args, service_env(tmp_path, {"SPARK_ML_NATS_URL": url, "SPARK_ML_SOLO": "true"}), tmp_path / "out.log"
    )
    try:
        assert proc.wait_for_output((ready,), timeout=30), proc.output()
    finally:
        proc.stop()
    # Then the output names the server and never the password
    out = proc.output()
    assert method.url.split("://", 1)[1] in out
    assert password not in out

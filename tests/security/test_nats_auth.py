"""NATS authentication and TLS, end to end: a ``spark-ml worker`` process configured only through
``SPARK_ML_*`` variables against nats-servers that require user/password, a token, an NKey, a credentials
file (operator/account/user JWTs), TLS with a private CA, and mutual TLS.

With the credential the worker predicts (stream and ``ml.predict``) and its DEBUG output holds no secret.
Without it the server refuses the worker, which must say why and exit non-zero in bounded time, never ready.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from spark_ml.core.contracts import Prediction
from tests.support.auth_servers import METHODS, Method
from tests.support.processes import SparkMl, base_env, predict_end_to_end, service_env, spark_ml

REFUSAL_BOUND_S = 8.0
"""How long a refused worker gets to say why and exit (it takes about a second)."""


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``spark-ml worker --check`` with the same settings (the compose health check)."""
    return subprocess.run(
        [spark_ml(), "worker", "--check", "--log-level", "DEBUG"],
        env={**base_env(), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def assert_no_secret(method: Method, *texts: str) -> None:
    for text in texts:
        for secret in method.secrets:
            assert secret not in text, f"{method.name}: a secret appears in the output"


def _info_and_anonymous_connect(url: str) -> tuple[dict[str, object], bytes]:
    """The server's INFO, then its answer to a CONNECT without credentials (plain TCP, no client library)."""
    host, port = url.removeprefix("nats://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        reader = sock.makefile("rb")
        info = json.loads(reader.readline().removeprefix(b"INFO "))
        if info.get("tls_required"):
            return info, b""  # a plain-text CONNECT would only be a protocol error
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        return info, reader.readline()


@pytest.mark.parametrize("name", METHODS)
def test_server_requires_the_method(methods: dict[str, Method], name: str) -> None:
    # The premise of every other test here: each server really refuses a client without the method.
    info, answer = _info_and_anonymous_connect(methods[name].url)
    if name in ("tls", "mtls"):
        assert info["tls_required"] is True
        assert info.get("tls_verify", False) is (name == "mtls")  # mutual TLS: a client certificate is required
    else:
        assert info["auth_required"] is True
        assert answer.startswith(b"-ERR 'Authorization Violation'"), answer


@pytest.mark.parametrize("name", METHODS)
async def test_worker_with_the_credential_predicts_end_to_end(methods: dict[str, Method], name: str, spawn, tmp_path):
    # Given a worker configured only through SPARK_ML_* variables, logging at DEBUG
    method = methods[name]
    env = service_env(tmp_path, method.env)
    worker = spawn(["worker", "--log-level", "DEBUG"], env, name)
    # When snapshots are published and ml.predict is asked, by a client holding the same credential
    got = await predict_end_to_end(method.url, method.client, worker)
    # Then the stream and the service both answer with valid predictions of the snapshot
    streamed = Prediction.model_validate(got["streamed"])
    replied = Prediction.model_validate(got["reply"])
    assert streamed.symbol == replied.symbol == "SEC" and replied.ts == got["request_ts"]
    assert "Nats-Service-Error-Code" not in got["reply_headers"]
    # And the health check passes with the same settings
    check = run_check(env)
    assert check.returncode == 0, check.stderr
    # And the worker stops cleanly, having logged no secret (nor has the check)
    assert worker.stop() == 0
    out = worker.output()
    assert "worker ready" in out and "worker stopped" in out
    assert_no_secret(method, out, check.stdout, check.stderr)


@dataclass(frozen=True)
class Refused:
    """What a worker without the credential did within :data:`REFUSAL_BOUND_S`."""

    said_why_after_s: float | None
    exit_code: int | None
    output: str
    check: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def refused(methods: dict[str, Method], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Refused]]:
    """Every method's worker without its credential, all started at once (so the bound is paid once)."""
    d = tmp_path_factory.mktemp("refused")
    envs = {name: service_env(d / name, m.denied_env) for name, m in methods.items()}
    procs = {name: SparkMl(["worker", "--log-level", "DEBUG"], envs[name], d / f"{name}.log") for name in methods}
    start = time.monotonic()
    results: dict[str, Refused] = {}
    try:
        said: dict[str, float | None] = {}
        for name, proc in procs.items():
            left = max(0.0, REFUSAL_BOUND_S - (time.monotonic() - start))
            ok = proc.wait_for_output(methods[name].refusal, left)
            said[name] = time.monotonic() - start if ok else None
        for name, proc in procs.items():
            code = proc.wait_exit(max(0.0, REFUSAL_BOUND_S - (time.monotonic() - start)))
            check = run_check(envs[name])
            results[name] = Refused(said[name], code, proc.output(), check)
    finally:
        for proc in procs.values():
            proc.stop()
    yield results


@pytest.mark.parametrize("name", METHODS)
def test_worker_without_the_credential_says_why_and_is_never_ready(
    methods: dict[str, Method], refused: dict[str, Refused], name: str
) -> None:
    r = refused[name]
    assert r.said_why_after_s is not None, f"no clear reason within {REFUSAL_BOUND_S}s:\n{r.output[-1500:]}"
    assert "worker ready" not in r.output
    assert r.check.returncode == 1, "the health check must fail while the worker cannot connect"
    assert_no_secret(methods[name], r.output, r.check.stdout, r.check.stderr)


@pytest.mark.parametrize("name", METHODS)
def test_worker_without_the_credential_exits_non_zero_within_bound(refused: dict[str, Refused], name: str) -> None:
    code = refused[name].exit_code
    assert code is not None and code != 0, f"still running after {REFUSAL_BOUND_S}s"


@pytest.mark.parametrize("name", ["userpass", "tls"])
def test_worker_without_the_credential_exits_with_one_line_not_a_traceback(
    refused: dict[str, Refused], name: str
) -> None:
    assert "Traceback" not in refused[name].output

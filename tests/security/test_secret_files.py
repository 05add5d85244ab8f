"""Secrets from files (``SPARK_ML_<NAME>_FILE``, as Docker and Kubernetes mount them): real ``spark-ml worker``
and ``gateway`` processes against nats-servers that require each secret, with only the files given; and a file
that cannot be used stops the process at start with exit 1 and a one-line reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
import pytest

from spark_ml.core.contracts import Prediction
from tests.security.test_gateway_auth import API_KEY, BODY, wait_health
from tests.support.auth_servers import Method
from tests.support.ports import free_port
from tests.support.processes import base_env, predict_end_to_end, service_env, spark_ml


def _as_files(env: dict[str, str], directory: Path, names: tuple[str, ...]) -> dict[str, str]:
    """``env`` with each ``SPARK_ML_<NAME>`` in ``names`` moved into a file named by ``SPARK_ML_<NAME>_FILE``."""
    out = dict(env)
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = directory / name.lower()
        path.write_text(out.pop(name) + "\n")  # as `echo secret > file` writes it
        path.chmod(0o400)
        out[f"{name}_FILE"] = str(path)
    return out


async def test_worker_and_gateway_take_the_nats_password_and_api_key_from_files(
    methods: dict[str, Method], spawn, tmp_path: Path
) -> None:
    # Given a nats-server requiring user/password, and a worker and a gateway given the password (and the
    # gateway the API key) only as files
    method = methods["userpass"]
    worker_env = _as_files(service_env(tmp_path / "w", method.env), tmp_path / "secrets", ("SPARK_ML_NATS_PASSWORD",))
    worker = spawn(["worker", "--log-level", "DEBUG"], worker_env, "worker")
    await predict_end_to_end(method.url, method.client, worker)
    port = free_port()
    gw_env = {
        **service_env(tmp_path / "gw", method.env),
        "SPARK_ML_HTTP_PORT": str(port),
        "SPARK_ML_API_KEY": API_KEY,
        "SPARK_ML_RATE_LIMIT": "1000/second",
    }
    gw_env = _as_files(gw_env, tmp_path / "gw-secrets", ("SPARK_ML_NATS_PASSWORD", "SPARK_ML_API_KEY"))
    gateway = spawn(["gateway", "--log-level", "DEBUG"], gw_env, "gateway")
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        await wait_health(http, url, 200, gateway)  # connected to NATS with the password from its file
        # When a prediction is asked without the key, then with the key the file holds (its final newline dropped)
        async with http.post(f"{url}/ml/predict", json=BODY) as resp:
            assert resp.status == 401
        async with http.post(f"{url}/ml/predict", json=BODY, headers={"X-API-Key": API_KEY}) as resp:
            # Then only the file's key opens it, and the prediction comes through the authenticated worker
            assert resp.status == 200, await resp.text()
            assert Prediction.model_validate_json(await resp.read()).symbol == "GW"
    assert gateway.stop() == 0 and worker.stop() == 0
    for proc in (gateway, worker):
        assert API_KEY not in proc.output() and method.client["password"] not in proc.output()


async def test_worker_takes_the_nats_token_from_a_file(methods: dict[str, Method], spawn, tmp_path: Path) -> None:
    method = methods["token"]
    env = _as_files(service_env(tmp_path / "w", method.env), tmp_path / "secrets", ("SPARK_ML_NATS_TOKEN",))
    worker = spawn(["worker"], env, "worker")
    out = await predict_end_to_end(method.url, method.client, worker)
    assert out["reply"]["symbol"] == "SEC"
    assert worker.stop() == 0


async def test_worker_takes_the_nats_credentials_from_the_file_variable(
    methods: dict[str, Method], spawn, tmp_path: Path
) -> None:
    method = methods["creds"]
    env = service_env(tmp_path / "w", method.env)
    env["SPARK_ML_NATS_CREDS_FILE"] = env.pop("SPARK_ML_NATS_CREDS")
    worker = spawn(["worker"], env, "worker")
    out = await predict_end_to_end(method.url, method.client, worker)
    assert out["reply"]["symbol"] == "SEC"
    assert worker.stop() == 0


def _start(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [spark_ml(), command], env={**base_env(), **env}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("command", ["gateway", "worker"])
def test_an_unusable_secret_file_exits_1_with_the_reason(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    unreadable = tmp_path / "unreadable"
    unreadable.write_text("secret-value\n")
    unreadable.chmod(0o000)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    both = tmp_path / "both"
    both.write_text("secret-value\n")
    nats = {"SPARK_ML_NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    cases = [
        ({"SPARK_ML_API_KEY_FILE": str(missing)}, f"SPARK_ML_API_KEY_FILE={missing}: cannot read it: No such file"),
        ({"SPARK_ML_NATS_PASSWORD_FILE": str(empty)}, f"SPARK_ML_NATS_PASSWORD_FILE={empty}: the file is empty"),
        (
            {"SPARK_ML_NATS_TOKEN_FILE": str(both), "SPARK_ML_NATS_TOKEN": "x"},
            "SPARK_ML_NATS_TOKEN and SPARK_ML_NATS_TOKEN_FILE are both set",
        ),
        ({"SPARK_ML_NATS_CREDS_FILE": str(missing)}, f"SPARK_ML_NATS_CREDS_FILE={missing}: cannot read it"),
    ]
    import os

    if os.geteuid() != 0:  # root reads any file: the permission case is meaningful only for other users
        cases.append(({"SPARK_ML_API_KEY_FILE": str(unreadable)}, "cannot read it: Permission denied"))
    for env, reason in cases:
        result = _start(command, {**nats, **env})
        assert result.returncode == 1, (env, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], (env, result.stderr)
        assert "secret-value" not in result.stderr and "Traceback" not in result.stderr

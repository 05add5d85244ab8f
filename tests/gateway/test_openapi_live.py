"""schemathesis against a live gateway: ``spark-ml up`` (worker, ``ml.predict``, live analytics and the HTTP gateway
in one process) on a real nats-server, driven by the document the gateway serves at ``/openapi.json``.

schemathesis runs as its CLI (``schemathesis run``; its pytest plugin does not load under pytest 9) with every
check but one: property-based requests for each operation (valid and invalid bodies in both media types, the
coverage phase's boundary values, wrong methods), and every response must conform to the document (status,
content type, headers, schema), with no server error. Not checked: ``positive_data_acceptance`` (a schema-valid
request must be accepted), because the worker refuses some schema-valid requests for reasons no schema states: a
``model`` that is not a registry version (``unknown_model``), a symbol that is not printable, prices whose
indicators overflow. Those refusals are 400s that the document lists. The rate limit is raised so that the
generated traffic is judged on its content, not cut off with 429s (which the document lists too). schemathesis
counts every 5xx as a server error, the documented 503 and 504 included: the run starts once a worker and the
analytics instance answer, with a request timeout no loaded machine reaches.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from openapi_spec_validator import validate

from spark_ml.core.partition import DEFAULT_PARTITIONS, server_mappings
from spark_ml.gateway.http import HttpGateway
from spark_ml.worker.natsserver import NatsServer
from spark_ml.worker.settings import Settings
from tests.support.ports import free_port
from tests.support.processes import SparkMl, base_env

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "openapi-live-key-3b9e"


def _status(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _wait_ready(base: str, proc: SparkMl, key: str | None, timeout: float = 60.0) -> None:
    """Until a worker answers (``/ml/health``) and the analytics instance is active (``/ml/analytics`` is no 503):
    a 5xx from a process still starting is not what the test looks for."""
    headers = {"X-API-Key": key} if key else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.alive(), proc.output()[-3000:]
        if _status(f"{base}/ml/health", {}) == 200 and _status(f"{base}/ml/analytics", headers) in (200, 404):
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway was not ready within {timeout}s: {proc.output()[-3000:]}")


@dataclass(frozen=True)
class Live:
    base: str
    api_key: str | None


@pytest.fixture(scope="module", params=["open", "api-key"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """``spark-ml up`` on a nats-server of its own, without and with an API key."""
    tmp: Path = tmp_path_factory.mktemp("openapi-live")
    key = API_KEY if request.param == "api-key" else None
    with NatsServer(store_dir=tmp / "nats", mappings=server_mappings(DEFAULT_PARTITIONS)) as server:
        port = free_port()
        env = {
            "SPARK_ML_NATS_URL": server.url,
            "SPARK_ML_HTTP_PORT": str(port),
            "SPARK_ML_METRICS_PORT": "0",
            "SPARK_ML_REGISTRY": str(tmp / "registry"),
            "SPARK_ML_RATE_LIMIT": "100000/second",
            # A loaded machine must not turn a slow answer into a 504: any 5xx fails the run.
            "SPARK_ML_REQUEST_TIMEOUT_S": "10",
            **({"SPARK_ML_API_KEY": key} if key else {}),
        }
        proc = SparkMl(["up"], env, tmp / "up.log")
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(base, proc, key)
            yield Live(base, key)
        finally:
            code = proc.stop()
            assert code == 0, proc.output()[-3000:]


def _document(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/openapi.json", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def test_the_served_document_is_valid_openapi(live: Live) -> None:
    # The document is served without the key, and describes the key when one is set
    doc = _document(live.base)
    validate(doc)
    assert set(doc["paths"]) == {
        "/ml/predict",
        "/ml/health",
        "/ml/model/info",
        "/ml/metrics",
        "/ml/analytics",
        "/ml/analytics/{symbol}",
        "/openapi.json",
    }
    assert ("security" in doc) == (live.api_key is not None)


def test_schemathesis_finds_no_server_error_and_every_response_conforms(live: Live, tmp_path: Path) -> None:
    args = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{live.base}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        "60",
        "--seed",
        "20261203",
        "--generation-deterministic",
        "--no-color",
        "--report-junit-path",
        str(tmp_path / "junit.xml"),
    ]
    if live.api_key:
        args += ["-H", f"X-API-Key: {live.api_key}"]
    env = {**base_env(), "SCHEMATHESIS_HOOKS": "tests.support.st_hooks", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    # It tested every operation with many requests, and every test case passed
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    cases = junit.findall(".//testcase")
    names = {c.get("name") for c in cases}
    assert names >= {"POST /ml/predict", "GET /ml/health", "GET /ml/model/info", "GET /ml/analytics/{symbol}"}, names
    assert not junit.findall(".//failure") and not junit.findall(".//error"), out[-6000:]
    generated = re.search(r"(\d+) generated", out)
    assert generated is not None and int(generated.group(1)) >= 100, out[-3000:]


def test_the_document_has_every_route_of_the_gateway() -> None:
    gateway = HttpGateway(Client(), Settings(http_port=0))
    routes = {r.canonical for r in gateway._app().router.resources()}
    assert routes == set(gateway._openapi["paths"])

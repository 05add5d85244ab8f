"""``spark-ml openapi``: the gateway's document for the settings, valid, the API key described but never shown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from openapi_spec_validator import validate

from tests.support.processes import base_env, spark_ml


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [spark_ml(), "openapi", *args], env={**base_env(), **env}, capture_output=True, text=True, timeout=60
    )


def test_prints_the_gateways_document(tmp_path: Path) -> None:
    done = run()
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    validate(doc)
    assert "security" not in doc and "65536 bytes" in json.dumps(doc)
    # With an API key: the document requires it and never shows it; --output writes the same
    out = tmp_path / "openapi.json"
    done = run("--output", str(out), SPARK_ML_API_KEY="s3cret-never-printed", SPARK_ML_MAX_PAYLOAD="1024")
    assert done.returncode == 0, done.stderr
    keyed = json.loads(out.read_text())
    validate(keyed)
    assert keyed["security"] and "s3cret" not in out.read_text() and "1024 bytes" in out.read_text()


def test_a_bad_setting_exits_2() -> None:
    done = run(SPARK_ML_MAX_PAYLOAD="lots")
    assert done.returncode == 2 and done.stderr.startswith("spark-ml openapi: error: ") and done.stdout == ""
